"""The moderation providers, one per `MODERATION_PROVIDER`, behind one protocol."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.jobs.screening import Piece
from app.moderation.decisions import Judgment, Stage


@dataclass(frozen=True, slots=True)
class Context:
    """Whose content, and for which job (the `http` provider passes both on)."""

    stage: Stage
    owner: str
    job_id: str | None = None


class ProviderError(Exception):
    """The provider did not answer usefully (down, slow, or an answer we cannot read)."""


class Provider(Protocol):
    name: str

    async def judge(self, context: Context, pieces: Sequence[Piece]) -> list[Judgment]:
        """One judgment per piece, in order; `ProviderError` when it cannot say."""
        ...
