"""What the tests and the benchmarks share: real servers on loopback ports, settings for
tests, fresh Postgres databases, proxies that cut connections, a webhook receiver. Tests
and benchmarks import this package, never each other."""
