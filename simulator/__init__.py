"""The Seedance v2 simulator shipped with the project (dev run, tests, benchmarks)."""

from simulator.app import SimulatorConfig, create_simulator

__all__ = ["SimulatorConfig", "create_simulator"]
