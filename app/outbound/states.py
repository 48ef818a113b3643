"""The names the outbound webhooks use: event types, and the life of a message."""

import uuid
from enum import StrEnum

from app.jobs.scheduler import AccountNotice
from app.moderation.history import ModerationNotice


class EventType(StrEnum):
    JOB_QUEUED = "job.queued"
    JOB_RUNNING = "job.running"
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELED = "job.canceled"
    JOB_DELETED = "job.deleted"
    # written to the outbox by the moderation domain
    JOB_MODERATION_HELD = ModerationNotice.HELD.value  # its result waits for review
    JOB_MODERATION_RELEASED = ModerationNotice.RELEASED.value  # review let it through
    JOB_TAKEN_DOWN = ModerationNotice.TAKEN_DOWN.value  # review removed it
    USER_SUSPENDED = ModerationNotice.SUSPENDED.value  # a user may not create any more
    BATCH_COMPLETED = "batch.completed"  # every variant of a batch is terminal
    # the credits ledger settled a job's hold (metering: one per job and phase)
    CREDITS_CHARGED = "credits.charged"  # it succeeded: its hold was charged
    CREDITS_REFUNDED = "credits.refunded"  # it ended without a video: its hold was released
    # written to the outbox by the dispatcher (admin events)
    ACCOUNT_PAUSED = AccountNotice.PAUSED.value  # Seedance's 402, or our key refused
    ACCOUNT_RESUMED = AccountNotice.RESUMED.value  # a probe was accepted


# sent on an admin's request to one endpoint, whatever it subscribes to
TEST_EVENT = "webhook.test"


class MessageStatus(StrEnum):
    PENDING = "pending"  # due at next_attempt_at (or being sent, under a lease until then)
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # every attempt of the schedule failed; an admin may retry it


class AttemptResult(StrEnum):
    DELIVERED = "delivered"
    HTTP_ERROR = "http_error"  # an answer other than 2xx (a redirect included: not followed)
    TIMEOUT = "timeout"
    NETWORK_ERROR = "network_error"  # refused, reset, unresolvable
    UNSAFE_URL = "unsafe_url"  # the host no longer resolves to a public address


def webhook_id(message_id: uuid.UUID) -> str:
    """The `webhook-id` header of a message: the same on every attempt, so receivers dedupe."""
    return f"msg_{message_id.hex}"
