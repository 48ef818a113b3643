"""What jobs ask of moderation: judge a create's prompts and inputs before anything is
recorded (the input stage), and say whether the user may create at all.

The moderation domain implements the `InputScreen` port declared here; `main` wires it.
Jobs only builds the pieces to judge, each named by where the request put it
(`prompt`, `images[1]`, `jobs[2].prompt`), and records what the screen decided with the
jobs it creates.
"""

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Job
from app.jobs.inputs import is_reference, upload_id_of


@dataclass(frozen=True, slots=True)
class Piece:
    """One thing to judge: a text or an image URL, and where the request named it."""

    field: str
    text: str | None = None
    image_url: str | None = None


@dataclass(slots=True)
class Screening:
    """A create's judgment once it passed, handed back to `record` with its jobs (the
    moderation domain's own kind of it carries the decisions). `unchecked`: the provider
    could not answer and the fail mode let the create through; its jobs are judged again
    before they are sent."""

    unchecked: bool = False


def job_pieces(
    prompt: str | None,
    images: Sequence[str],
    field_of: Callable[[str], str],
    upload_urls: Mapping[uuid.UUID, str],
) -> list[Piece]:
    """What moderation judges of one job: its prompt and its images (an upload by a URL
    of its clean copy; one that is gone is left to the create's own check). `field_of`
    names a field as the request did."""
    pieces = [Piece(field_of("prompt"), text=prompt)] if prompt else []
    for index, image in enumerate(images):
        url = upload_urls.get(upload_id_of(image)) if is_reference(image) else image
        if url is not None:
            pieces.append(Piece(field_of(f"images[{index}]"), image_url=url))
    return pieces


class InputScreen(Protocol):
    async def screen(self, owner: str, jobs: Sequence[Sequence[Piece]]) -> Screening:
        """Judge the pieces of each job of a create. Refuse a suspended user (403
        `account_suspended`), a refused piece (422 `content_policy` naming every field at
        fault: the whole create is refused) or, with the provider down and the fail mode
        closed, everything (503 `moderation_unavailable`); a `ProblemError`. No
        transaction is open while the provider is asked."""
        ...

    async def record(
        self, session: AsyncSession, screening: Screening, jobs: Sequence[tuple[Job, str]]
    ) -> None:
        """In the create's transaction, once its jobs are flushed: what `screening` says of
        them (`jobs` pairs each job with its fields' prefix in the request)."""
        ...
