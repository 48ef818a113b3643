"""The one retry schedule of the background loops: capped exponential backoff."""

import math
from datetime import timedelta


def backoff(attempt: int, initial_seconds: float, max_seconds: float = math.inf) -> timedelta:
    """The wait after failed attempt number `attempt` (1 for the first): the initial wait,
    doubled for each attempt after it, at most `max_seconds`."""
    return timedelta(seconds=min(initial_seconds * 2 ** max(0, attempt - 1), max_seconds))
