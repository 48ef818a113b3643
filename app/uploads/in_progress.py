"""Uploads being received or read in this process, by owner and by client address: past
UPLOADS_IN_PROGRESS_PER_USER or _PER_ADDRESS, a 429 before a byte of the body is read.

Each upload in progress holds a connection, staged bytes and, for the read, a decoding
slot; without a cap one user (or one address's many accounts) could hold them all. The
count is per process, like the slots it protects.
"""

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from app.kit.errors import ProblemError

RETRY_AFTER_SECONDS = 5


class UploadsInProgress:
    def __init__(self, per_user: int, per_address: int) -> None:
        self._per_user, self._per_address = per_user, per_address
        self._by_owner: Counter[str] = Counter()
        self._by_address: Counter[str] = Counter()

    def of(self, owner: str) -> int:
        return self._by_owner[owner]

    @contextmanager
    def hold(self, owner: str, address: str) -> Iterator[None]:
        if self._by_owner[owner] >= self._per_user:
            raise _too_many(f"{self._per_user} of your uploads are")
        if self._by_address[address] >= self._per_address:
            raise _too_many(f"{self._per_address} uploads from your address are")
        self._by_owner[owner] += 1
        self._by_address[address] += 1
        try:
            yield
        finally:
            for counts, key in ((self._by_owner, owner), (self._by_address, address)):
                counts[key] -= 1
                if not counts[key]:
                    del counts[key]


def _too_many(who: str) -> ProblemError:
    return ProblemError(
        429,
        "too_many_uploads_in_progress",
        f"{who} in progress already; send this one when one of them has finished.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
