"""The life of a job's stored media, beside the job's own state machine.

`pending` (Seedance reported success; the copy is due, or claimed under a lease) ->
`stored` (video and poster in our storage; the job then moves to `succeeded`) |
`failed` (the copy cannot be made; the job moves to `failed`). `stored` -> `purging`
(deleted by its owner, erased, or past retention) -> `purged` (the objects are gone).
A job deleted while its copy was pending goes straight to `purged` with nothing stored.
"""

from enum import StrEnum


class MediaStatus(StrEnum):
    PENDING = "pending"
    STORED = "stored"
    FAILED = "failed"
    PURGING = "purging"
    PURGED = "purged"
