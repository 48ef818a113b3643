"""The docs cannot drift from the code: the settings page is generated from `Settings`,
every setting says what it does, and every page under docs/ is reachable from the README."""

import re
from pathlib import Path

from app.config import Settings, settings_doc

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_settings_page_is_generated_from_settings() -> None:
    assert (ROOT / "docs" / "settings.md").read_text() == settings_doc(), (
        "run: python -m app.config > docs/settings.md"
    )


def test_every_setting_says_what_it_does() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", settings_doc(), flags=re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_every_page_of_docs_is_linked_from_the_readme_and_every_link_resolves() -> None:
    pages = {path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").glob("*.md")}
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)(?:#[\w-]+)?\)", README))
    assert pages and linked == pages
    assert len(README.splitlines()) < 300
