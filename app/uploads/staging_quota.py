"""The bytes this process has staged for uploads in progress (each original as it
arrives, then its clean copy), within UPLOAD_STAGING_QUOTA_BYTES: the upload that would
pass it is cut with 503 `staging_full` and its staged files removed at once, so many
uploads at once fill the quota, never the disk (the pod's staging volume is evicted when
full, taking every upload of the replica with it)."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from app.kit.errors import ProblemError

RETRY_AFTER_SECONDS = 10


class StagingQuota:
    def __init__(self, limit_bytes: int) -> None:
        self._limit = limit_bytes
        self.used = 0

    @contextmanager
    def upload(self) -> Iterator[Callable[[int], None]]:
        """A function taking `n` more bytes for one upload; all given back when it ends."""
        taken = 0

        def take(count: int) -> None:
            nonlocal taken
            if self.used + count > self._limit:
                raise ProblemError(
                    503,
                    "staging_full",
                    "Too many uploads are arriving at this server at once; send it again shortly.",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            self.used += count
            taken += count

        try:
            yield take
        finally:
            self.used -= taken
