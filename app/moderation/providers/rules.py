"""The offline provider: the operator's BLOCKED_PROMPT_PATTERNS, matched on the text as a
reader sees it (NFKC-normalized, format characters gone: a zero-width space or a soft
hyphen inside a word hides nothing). A match blocks; images pass (patterns read text)."""

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from app.jobs.screening import Piece
from app.moderation.decisions import Judgment, Verdict
from app.moderation.providers import Context

CATEGORY = "blocked_pattern"
_ALLOWED = Judgment(flagged=False)


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


class RulesProvider:
    name = "rules"

    def __init__(self, patterns: Sequence[str]) -> None:
        self._blocked = _compiled(tuple(patterns))

    async def judge(self, context: Context, pieces: Sequence[Piece]) -> list[Judgment]:
        return [self._judge(piece) for piece in pieces]

    def _judge(self, piece: Piece) -> Judgment:
        if (
            self._blocked is None
            or piece.text is None
            or not self._blocked.search(as_read(piece.text))
        ):
            return _ALLOWED
        return Judgment(True, {CATEGORY: 1.0}, Verdict.BLOCK, "prompt_matches_blocked_pattern")


class NoProvider:
    """`MODERATION_PROVIDER=none`: everything passes (the product moderates elsewhere)."""

    name = "none"

    async def judge(self, context: Context, pieces: Sequence[Piece]) -> list[Judgment]:
        return [_ALLOWED for _ in pieces]
