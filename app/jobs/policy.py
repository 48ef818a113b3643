"""Content policy: the place to plug a moderation service before anything reaches Seedance.

Today it refuses prompts that match an operator-configured list of regexes
(BLOCKED_PROMPT_PATTERNS, case-insensitive). A moderation API call would go in
`check_prompt` too; it runs before a job is recorded, so a refused prompt costs nothing.
"""

import re
from functools import lru_cache

from app.config import Settings
from app.kit.errors import invalid_field


@lru_cache(maxsize=8)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


def check_prompt(settings: Settings, prompt: str | None, field: str = "prompt") -> None:
    blocked = _compiled(tuple(settings.blocked_prompt_patterns))
    if prompt is None or blocked is None or not blocked.search(prompt):
        return
    raise invalid_field(
        field,
        "prompt_blocked",
        "blocked by content policy",
        "The prompt is not allowed by the content policy.",
    )
