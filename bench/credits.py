"""What the credits ledger costs a create.

`POST /jobs` with CREDITS_LEDGER on (a hold in every create's transaction) vs off, two
servers on one database, wrk alternating between them for `--rounds` rounds (median round
each): the goal is at least 90% of the creates a second with it off. Then the hot account:
one user's creates at 64 connections with the ledger on (every create takes that user's
account row; no deadlock, p99 reported). Every user starts with a balance no run exhausts.

    .venv/bin/python -m bench.credits --seconds 10 --connections 64
"""

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from app.db.models import CreditAccount
from app.identity.tokens import issue_token
from bench.api_throughput import BODY, USERS, alternating, line, wrk
from bench.common import (
    RESULTS,
    SECRETS,
    insert_rows,
    migrated_database,
    print_table,
    server,
    server_pid,
    service_env,
    write_results,
)
from testkit.harness import plain_settings

APP = "app.main:create_app"
BALANCE = 10**12


async def funded(url: str) -> None:
    """Every bench user with a balance (accounts made directly: grants are not measured)."""
    engine = create_async_engine(url)
    now = datetime.now(UTC)
    rows = [
        {
            "id": f"user:bench{i:06d}",
            "kind": "user",
            "subject": f"user-{i}",
            "credits_posted": BALANCE,
            "debits_posted": 0,
            "debits_pending": 0,
            "updated_at": now,
        }
        for i in range(USERS)
    ]
    async with engine.begin() as conn:
        await insert_rows(conn, CreditAccount.__table__, rows)
    await engine.dispose()


async def measure(args: Any) -> list[dict[str, Any]]:
    settings = plain_settings(**SECRETS)
    tokens = [f"Bearer {issue_token(settings, f'user-{i}')}" for i in range(USERS)]
    spread = [line("POST", "/jobs", token, BODY) for token in tokens]
    one_user = [line("POST", "/jobs", tokens[0], BODY)]
    log = RESULTS / "credits.log"
    async with migrated_database("bench_credits") as url:
        await funded(url)
        off = service_env(url, args.port, credits_ledger="false")
        on = service_env(url, args.port + 1, credits_ledger="true")
        with (
            server(APP, args.port, 1, off, log) as off_url,
            server(APP, args.port + 1, 1, on, log) as on_url,
        ):
            targets = {
                "off": (off_url, server_pid(APP, args.port)),
                "on": (on_url, server_pid(APP, args.port + 1)),
            }
            medians = await alternating(targets, spread, args)
            hot = await asyncio.to_thread(wrk, on_url, one_user, args.seconds, args.connections)
    rows = [
        {
            "ledger": name,
            "users": USERS,
            "rps": figures["rps"],
            "p50_ms": figures["p50_ms"],
            "p99_ms": figures["p99_ms"],
            "errors": figures["not_ok"],
            "of_off": f"{figures['rps'] / medians['off']['rps']:.0%}",
            "service_cpu_ms_per_create": figures["service_cpu_ms"],
            "rounds": figures["rounds"],
        }
        for name, figures in medians.items()
    ]
    rows.append(
        {
            "ledger": "on, one user",
            "users": 1,
            "rps": hot["rps"],
            "p50_ms": hot["p50_ms"],
            "p99_ms": hot["p99_ms"],
            "errors": hot["not_ok"],
            "of_off": f"{hot['rps'] / medians['off']['rps']:.0%}",
            "service_cpu_ms_per_create": "",
            "rounds": [hot["rps"]],
        }
    )
    return rows


async def main(args: Any) -> None:
    RESULTS.mkdir(exist_ok=True)
    rows = await measure(args)
    headers = [h for h in rows[0] if h != "rounds"]
    print_table(
        f"POST /jobs with the credits ledger ({args.seconds:g} s per run, wrk -t1 "
        f"-c{args.connections})",
        headers,
        [[r[h] for h in headers] for r in rows],
    )
    write_results("credits", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=8740)
    asyncio.run(main(parser.parse_args()))
