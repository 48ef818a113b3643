"""Run the simulator alone: `python -m simulator --port 8100 [--set task_seconds=5 ...]`."""

import argparse
import json

import uvicorn

from simulator.app import SimulatorConfig, create_simulator


def parse_assignments(pairs: list[str]) -> dict[str, object]:
    """`name=value` pairs; values are read as JSON when they parse, else as strings."""
    settings: dict[str, object] = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        try:
            settings[name] = json.loads(raw)
        except json.JSONDecodeError:
            settings[name] = raw
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"a SimulatorConfig field: {', '.join(SimulatorConfig.model_fields)}",
    )
    args = parser.parse_args()
    config = SimulatorConfig.model_validate(parse_assignments(args.set))
    uvicorn.run(create_simulator(config), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
