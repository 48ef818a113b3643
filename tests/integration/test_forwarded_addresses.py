"""Whose address a request has, as the image runs the service (`docker/entrypoint.sh`):
`X-Forwarded-For` believed from FORWARDED_ALLOW_IPS only (issue 37, item 5).

Every address of 127.0.0.0/8 is this machine's: the client connects from 127.0.0.2 (a
stranger) or from 127.0.0.3 (the proxy the service trusts), and the failed-authentication
cap (3 refused keys an address) shows which address each request was counted under.
"""

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from testkit.harness import SEEDANCE_TEST_KEY, free_port, service_env, wait_until_healthy

ENTRYPOINT = Path(__file__).parents[2] / "docker" / "entrypoint.sh"
STRANGER, PROXY = "127.0.0.2", "127.0.0.3"
GUESS = {"Authorization": "Bearer sbff_live_" + "0" * 40}


@asynccontextmanager
async def image_service(database_url: str) -> AsyncIterator[str]:
    """`entrypoint.sh serve`, as the image starts it, trusting PROXY's forwarded header."""
    port = free_port()
    env = service_env(
        {
            "database_url": database_url,
            "seedance_api_key": SEEDANCE_TEST_KEY,
            "dispatcher_enabled": False,
            "reconciler_enabled": False,
            "media_worker_enabled": False,
            "rate_limit_failed_auth": "3/minute",
            "migrate_on_start": "false",
            "port": port,
            "forwarded_allow_ips": PROXY,
        }
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    process = await asyncio.create_subprocess_exec("sh", str(ENTRYPOINT), "serve", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_healthy(url, within=60)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)


def client_from(address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=address))


async def guesses(http: httpx.AsyncClient, url: str, forwarded_for: list[str]) -> list[int]:
    statuses = []
    for forwarded in forwarded_for:
        headers = {**GUESS, "X-Forwarded-For": forwarded}
        statuses.append((await http.get(f"{url}/jobs", headers=headers)).status_code)
    return statuses


async def test_a_forged_header_counts_for_nothing_and_the_proxys_names_the_client(
    database_url: str,
) -> None:
    async with (
        image_service(database_url) as url,
        client_from(STRANGER) as stranger,
        client_from(PROXY) as proxy,
    ):
        # a stranger naming a new address in each request: all counted as the stranger's
        forged = [f"203.0.113.{n}" for n in range(5)]
        assert await guesses(stranger, url, forged) == [401, 401, 401, 429, 429]
        # through the proxy: the rightmost address it did not add itself is the client;
        # a client's forged entries to its left count for nothing either
        one = [f"198.51.100.{n}, 192.0.2.1" for n in range(5)]
        assert await guesses(proxy, url, one) == [401, 401, 401, 429, 429]
        assert await guesses(proxy, url, ["192.0.2.2"]) == [401]  # another client: its own
