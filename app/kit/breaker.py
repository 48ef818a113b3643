"""A circuit breaker for a dependency the service can run without (Redis, for rate limits).

A dependency that accepts connections and never answers (a brownout, not an outage) would
otherwise cost every request its full deadline for as long as it lasts. After `threshold`
failures in a row the breaker opens: calls skip the dependency at once (the caller fails
open, as it does on an error). After `reset_seconds` a single call goes through as a
probe; its success closes the breaker, its failure opens it again. A brownout therefore
costs a few deadlines, then one per `reset_seconds`, not one per request.
"""

import logging
import time
from collections.abc import Callable
from enum import StrEnum

from prometheus_client import Gauge

logger = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls skip the dependency
    PROBING = "probing"  # one call is out to see whether it is back


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        gauge: Gauge,
        *,
        threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._gauge = gauge
        self._threshold = threshold
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self.state = BreakerState.CLOSED
        self._gauge.set(0)

    def allow(self) -> bool:
        """Whether this call may use the dependency (at most one probe at a time)."""
        if self.state is BreakerState.CLOSED:
            return True
        if (
            self.state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self._reset_seconds
        ):
            self.state = BreakerState.PROBING
            return True
        return False

    def succeeded(self) -> None:
        if self.state is BreakerState.CLOSED:
            self._failures = 0
            return
        logger.warning("%s answers again: circuit closed", self._name)
        self._failures = 0
        self.state = BreakerState.CLOSED
        self._gauge.set(0)

    def failed(self) -> None:
        self._failures += 1
        if self.state is BreakerState.PROBING or self._failures >= self._threshold:
            if self.state is BreakerState.CLOSED:
                logger.warning(
                    "%s failed %d times in a row: circuit open, calls skip it",
                    self._name,
                    self._failures,
                )
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._gauge.set(1)
