"""Content policy: the place to plug a moderation service before anything reaches Seedance.

Today it refuses prompts that match an operator-configured list of regexes
(BLOCKED_PROMPT_PATTERNS, case-insensitive). A moderation API call would go in
`check_prompt` too; it runs before a job is recorded, so a refused prompt costs nothing.

The patterns see the prompt as a reader does: NFKC-normalized (fullwidth letters are
letters) and without format characters (a zero-width space or a soft hyphen inside a
word hides nothing).
"""

import re
import unicodedata
from functools import lru_cache

from app.config import Settings
from app.kit.errors import invalid_field


@lru_cache(maxsize=8)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


def as_read(text: str) -> str:
    """What a reader sees: compatibility forms folded, invisible format characters gone."""
    return "".join(
        c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf"
    )


def check_prompt(settings: Settings, prompt: str | None, field: str = "prompt") -> None:
    blocked = _compiled(tuple(settings.blocked_prompt_patterns))
    if prompt is None or blocked is None or not blocked.search(as_read(prompt)):
        return
    raise invalid_field(
        field,
        "prompt_blocked",
        "blocked by content policy",
        "The prompt is not allowed by the content policy.",
    )
