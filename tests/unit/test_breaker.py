"""The circuit breaker's states, on a clock the test moves."""

from prometheus_client import CollectorRegistry, Gauge

from app.kit.breaker import BreakerState, CircuitBreaker


def test_open_after_the_threshold_one_probe_then_closed_or_open_again() -> None:
    now = [0.0]
    registry = CollectorRegistry()
    gauge = Gauge("test_breaker_open", "test", registry=registry)

    def shown() -> float | None:
        return registry.get_sample_value("test_breaker_open")

    breaker = CircuitBreaker("dep", gauge, threshold=3, reset_seconds=5, clock=lambda: now[0])
    breaker.failed()
    breaker.succeeded()  # a success in between starts the count again
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert breaker.state is BreakerState.CLOSED
    breaker.failed()
    assert breaker.state is BreakerState.OPEN and shown() == 1
    assert not breaker.allow()
    now[0] = 5.0
    assert breaker.allow() and breaker.state is BreakerState.PROBING
    assert not breaker.allow()  # one probe at a time
    breaker.failed()  # the probe failed: open again, for another reset period
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    now[0] = 10.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED and shown() == 0
    assert breaker.allow() and breaker.allow()
