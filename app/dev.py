"""The zero-setup dev run: SQLite file database, the Seedance simulator alongside, media in
a local folder (`./media`), a token.

`python -m app.dev` migrates the database, starts the simulator (port 8100) and the
service (port 8000) in one process, and prints a client token and a curl to try.
"""

import argparse
import asyncio
import logging

import uvicorn

from app.config import Settings
from app.db.migrate import upgrade
from app.identity.tokens import issue_token
from app.main import create_app
from simulator import SimulatorConfig, create_simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--simulator-port", type=int, default=8100)
    parser.add_argument("--task-seconds", type=float, default=5.0, help="simulated render time")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines carry callback signatures

    base = Settings()
    settings = base.model_copy(
        update={
            "seedance_base_url": f"http://127.0.0.1:{args.simulator_port}/v2",
            "public_base_url": f"http://127.0.0.1:{args.port}",
            # the simulator serves its results over plain http on loopback
            "media_trusted_origins": [f"http://127.0.0.1:{args.simulator_port}"],
        }
    )
    upgrade(settings.database_url)
    simulator = create_simulator(
        SimulatorConfig(
            api_key=settings.seedance_api_key.get_secret_value(),
            task_seconds=args.task_seconds,
            reject_local_urls=False,  # the callback goes to this laptop
        )
    )
    token = issue_token(settings, "dev-user")
    print(
        f"\nseedance-bff dev run: service http://127.0.0.1:{args.port}  "
        f"simulator http://127.0.0.1:{args.simulator_port}  database {settings.database_url}  "
        f"media {settings.media_root}\n"
        f"\nplayground: http://127.0.0.1:{args.port}/playground/\n"
        f"\nexport TOKEN={token}\n"
        f'curl -s -X POST http://127.0.0.1:{args.port}/jobs -H "Authorization: Bearer $TOKEN" '
        "-H 'Content-Type: application/json' "
        '-d \'{"prompt": "a paper boat on a rainy street"}\'\n',
        flush=True,
    )
    servers = [
        uvicorn.Server(uvicorn.Config(simulator, port=args.simulator_port, log_level="warning")),
        uvicorn.Server(uvicorn.Config(create_app(settings), port=args.port, access_log=False)),
    ]
    asyncio.run(_serve(servers))


async def _serve(servers: list[uvicorn.Server]) -> None:
    await asyncio.gather(*(server.serve() for server in servers))


if __name__ == "__main__":
    main()
