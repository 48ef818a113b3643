"""Rate limits (shared through real Redis), per-user budgets (held by Postgres under
concurrency), the content policy and the global submission rate."""

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from limits import parse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.models import Job
from app.jobs.callbacks import callback_signature
from app.main import create_app
from app.ratelimits.windows import MemoryWindows, RedisWindows
from testkit.harness import Stack, bearer, running_stack, serve, wait_until
from testkit.tcp_proxy import TcpProxy

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BODY = {"prompt": "a paper boat drifting down a rainy street"}  # 8 s at 720p: 16 credits


def redis_settings(**overrides: Any) -> dict[str, Any]:
    """Each test gets its own key prefix in the shared Redis."""
    return {
        "redis_url": REDIS_URL,
        "rate_limit_key_prefix": f"test-{uuid.uuid4().hex}",
        **overrides,
    }


@asynccontextmanager
async def second_instance(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Another replica of the service on the same database (and Redis, when configured)."""
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


async def count_jobs(db_engine: AsyncEngine) -> int:
    async with db_engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(Job)) or 0


async def test_create_limit_is_shared_by_two_instances_through_redis(database_url: str) -> None:
    async with (
        running_stack(database_url, **redis_settings(rate_limit_create="5/minute")) as stack,
        second_instance(stack.settings) as other,
    ):
        headers = stack.headers()
        codes = []
        for client in (stack.http, other, stack.http, other, stack.http, other):
            response = await client.post("/jobs", json=BODY, headers=headers)
            codes.append(response.status_code)
            assert response.headers["x-ratelimit-limit"] == "5"
        assert codes == [202] * 5 + [429]
        problem = response.json()
        assert problem["code"] == "rate_limited"
        assert response.headers["content-type"] == "application/problem+json"
        assert 0 < int(response.headers["retry-after"]) <= 60
        assert response.headers["x-ratelimit-remaining"] == "0"
        # another user has a budget of their own; reads have their own limit
        assert (
            await other.post("/jobs", json=BODY, headers=stack.headers("bob"))
        ).status_code == 202
        assert (await other.get("/jobs", headers=headers)).status_code == 200


async def test_memory_storage_works_without_redis_and_is_per_instance(database_url: str) -> None:
    async with (
        running_stack(database_url, redis_url=None, rate_limit_read="2/minute") as stack,
        second_instance(stack.settings) as other,
    ):
        headers = stack.headers()
        first = [(await stack.http.get("/jobs", headers=headers)).status_code for _ in range(3)]
        assert first == [200, 200, 429]
        assert (await other.get("/jobs", headers=headers)).status_code == 200


async def test_rate_limit_headers_are_on_error_responses_too(database_url: str) -> None:
    async with running_stack(database_url, **redis_settings(rate_limit_read="50/minute")) as stack:
        missing = await stack.http.get(f"/jobs/{uuid.uuid4()}", headers=stack.headers())
        assert missing.status_code == 404
        assert missing.headers["x-ratelimit-limit"] == "50"
        assert missing.headers["x-ratelimit-remaining"] == "49"
        assert int(missing.headers["x-ratelimit-reset"]) > 0


async def test_webhooks_are_limited_per_source_ip(database_url: str) -> None:
    async with running_stack(
        database_url, **redis_settings(rate_limit_callback="3/minute")
    ) as stack:
        job_id = uuid.uuid4()
        url = f"/webhooks/seedance/{job_id}"
        params = {"sig": callback_signature(stack.settings, job_id)}
        codes = [(await stack.http.post(url, params=params, json={})).status_code for _ in range(4)]
        assert codes == [400, 400, 400, 429]


async def _burst(clients: list[httpx.AsyncClient], headers: dict[str, str], n: int) -> Counter[int]:
    responses = await asyncio.gather(
        *(clients[i % len(clients)].post("/jobs", json=BODY, headers=headers) for i in range(n))
    )
    return Counter(r.status_code for r in responses)


async def test_daily_budget_never_overshoots_under_concurrent_creates(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with (
        running_stack(database_url, user_daily_credit_budget=7 * 16) as stack,
        second_instance(stack.settings) as other,
    ):
        outcome = await _burst([stack.http, other], stack.headers(), 20)
        assert outcome == Counter({202: 7, 402: 13})
        assert await count_jobs(db_engine) == 7
        refused = await stack.http.post("/jobs", json=BODY, headers=stack.headers())
        assert refused.json()["code"] == "budget_exceeded"
        usage = (await stack.http.get("/me/usage", headers=stack.headers())).json()
        assert usage["spent_today"] == usage["daily_budget"] == 112
        assert (usage["remaining_today"], usage["jobs_in_flight"]) == (0, 7)


async def test_in_flight_cap_never_overshoots_under_concurrent_creates(
    database_url: str, db_engine: AsyncEngine
) -> None:
    async with (
        running_stack(database_url, user_max_jobs_in_flight=5) as stack,
        second_instance(stack.settings) as other,
    ):
        outcome = await _burst([stack.http, other], stack.headers(), 20)
        assert outcome == Counter({202: 5, 429: 15})
        assert await count_jobs(db_engine) == 5
        refused = await stack.http.post("/jobs", json=BODY, headers=stack.headers())
        assert refused.json()["code"] == "too_many_jobs_in_flight"
        assert (
            await stack.http.post("/jobs", json=BODY, headers=stack.headers("bob"))
        ).status_code == 202


async def test_jobs_that_never_reached_seedance_cost_nothing(database_url: str) -> None:
    async with running_stack(
        database_url,
        sim_config={"reject_local_urls": True},  # a 400: no task was made
        dispatcher_enabled=True,
        user_daily_credit_budget=100,
    ) as stack:
        await stack.create_job()
        await wait_until(lambda: _statuses(stack, ["failed"]))
        usage = (await stack.http.get("/me/usage", headers=stack.headers())).json()
        assert (usage["spent_today"], usage["remaining_today"], usage["jobs_in_flight"]) == (
            0,
            100,
            0,
        )


async def _statuses(stack: Stack, wanted: list[str]) -> bool:
    return [j.status for j in await stack.jobs()] == wanted


async def test_blocked_prompts_are_refused_before_anything_is_recorded(
    database_url: str, db_engine: AsyncEngine
) -> None:
    patterns = [r"\bforbidden\s+thing\b", "celebrity-[0-9]+"]
    async with running_stack(
        database_url,
        blocked_prompt_patterns=patterns,
        dispatcher_enabled=True,
        moderation_strikes_to_suspend=10,  # six refusals here; suspension is tested apart
    ) as stack:
        disguised = [
            "a forbid\u200bden thing",  # a zero-width space inside the word
            "a forbid\u00adden thing",  # a soft hyphen
            "a \uff46\uff4f\uff52\uff42\uff49\uff44\uff44\uff45\uff4e thing",  # fullwidth
            "portrait of celebrity\ufe6342",  # a small hyphen-minus (NFKC: -)
        ]
        for prompt in ["a FORBIDDEN   thing on a boat", "portrait of celebrity-42", *disguised]:
            response = await stack.http.post(
                "/jobs", json={"prompt": prompt}, headers=stack.headers()
            )
            assert (response.status_code, response.json()["code"]) == (422, "content_policy")
            assert response.json()["errors"] == [
                {
                    "field": "prompt",
                    "code": "content_policy",
                    "message": "not allowed by the content policy (blocked_pattern)",
                    "categories": ["blocked_pattern"],
                }
            ]
        assert (
            await stack.http.post(
                "/jobs", json={"prompt": "a forbidden-ish boat"}, headers=stack.headers()
            )
        ).status_code == 202
        assert await count_jobs(db_engine) == 1
        await wait_until(lambda: _statuses(stack, ["succeeded"]))
        assert stack.sim.calls["generate"] == 1


async def test_global_submission_rate_caps_generate_calls(database_url: str) -> None:
    async with running_stack(
        database_url,
        **redis_settings(dispatcher_submits_per_second=4),
        dispatcher_enabled=True,
        dispatcher_max_in_flight=50,
    ) as stack:
        for _ in range(12):
            await stack.http.post("/jobs", json=BODY, headers=stack.headers())
        await wait_until(lambda: _statuses(stack, ["succeeded"] * 12))
        times = sorted(stack.sim.generate_times)
        assert len(times) == 12
        # no window of 0.9 s (1 s less transport jitter) saw more than 4 calls; unlimited,
        # all 12 would arrive within milliseconds
        assert max(sum(1 for t in times if start <= t < start + 0.9) for start in times) <= 4
        assert times[-1] - times[0] >= 1.8  # three windows of four


async def test_usage_needs_a_token(database_url: str) -> None:
    async with running_stack(database_url) as stack:
        assert (await stack.http.get("/me/usage")).status_code == 401
        assert (await stack.http.get("/me/usage", headers=bearer(stack.settings, "x"))).json()[
            "spent_today"
        ] == 0


async def test_a_burst_beyond_the_redis_pool_waits_for_a_connection() -> None:
    """redis-py's default pool refused every call past its size at once, which opened the
    breaker: a burst of requests went through unlimited."""
    windows = RedisWindows(REDIS_URL, f"test-{uuid.uuid4().hex}", max_connections=4)
    try:
        hits = await asyncio.gather(
            *(windows.hit(parse("150 per minute"), "read", "user:alice") for _ in range(200))
        )
    finally:
        await windows.aclose()
    assert sum(taken for taken, _ in hits) == 150  # every call counted, none refused by the pool


async def test_redis_and_memory_windows_count_alike() -> None:
    """The one-script Redis window and limits' in-memory one: same decisions, same headers."""
    item = parse("3 per 2 seconds")
    for windows in (RedisWindows(REDIS_URL, f"test-{uuid.uuid4().hex}"), MemoryWindows()):
        started = time.time()
        hits = [await windows.hit(item, "read", "user:alice") for _ in range(4)]
        assert [taken for taken, _ in hits] == [True, True, True, False]
        assert [stats.remaining for _, stats in hits] == [2, 1, 0, 0]
        # the window ends 2 s after its oldest entry, the first hit
        assert started + 2 <= hits[-1][1].reset_time <= time.time() + 2
        other_user = await windows.hit(item, "read", "user:bob")
        assert other_user[0] and other_user[1].remaining == 2
        await asyncio.sleep(hits[-1][1].reset_time - time.time() + 0.05)
        taken, stats = await windows.hit(item, "read", "user:alice")
        assert taken and stats.remaining == 2
        await windows.aclose()


async def test_a_redis_that_stops_answering_is_given_up_at_the_deadline() -> None:
    """A Redis that accepts the connection and never answers: the hit ends on its own with
    TimeoutError (which `RateLimits.check` turns into a request let through), and the
    half-used connection is closed rather than returned to the pool."""
    closed = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):  # swallow the handshake and the command, say nothing
            pass
        closed.set()
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    windows = RedisWindows(f"redis://127.0.0.1:{port}/0", "test-hung", timeout=0.2)
    hit = asyncio.create_task(windows.hit(parse("3 per second"), "read", "user:alice"))
    done, _ = await asyncio.wait({hit}, timeout=10)
    assert hit in done, "the hit outlived its deadline"
    assert isinstance(hit.exception(), TimeoutError)
    await asyncio.wait_for(closed.wait(), 10)
    await windows.aclose()
    server.close()
    await server.wait_closed()


async def test_a_hung_redis_costs_a_few_deadlines_then_none(database_url: str) -> None:
    """Redis accepts connections and never answers: after the breaker's threshold of
    timeouts, requests make no Redis attempt (counted at the proxy) until the probe; once
    Redis answers again the probe closes the breaker and the limits hold again."""
    proxy = TcpProxy("127.0.0.1", int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    proxy.hang = True
    settings = redis_settings(
        redis_url=f"redis://127.0.0.1:{proxy.port}/0",
        redis_timeout_seconds=0.2,
        redis_breaker_failures=3,
        # long enough that the 20 requests below end before a probe is due, even on a busy
        # machine (a probe within them would be a fourth connection)
        redis_breaker_reset_seconds=5,
        rate_limit_read="5/minute",
    )
    async with running_stack(database_url, **settings) as stack:
        statuses = [(await stack.http.get("/jobs", headers=stack.headers())).status_code]
        statuses += [(await stack.http.get("/jobs", headers=stack.headers())).status_code]
        statuses += [(await stack.http.get("/jobs", headers=stack.headers())).status_code]
        attempts = proxy.connections
        assert statuses == [200, 200, 200] and attempts >= 3  # each waited out its deadline
        for _ in range(20):  # the breaker is open: let through at once, Redis not asked
            assert (await stack.http.get("/jobs", headers=stack.headers())).status_code == 200
        assert proxy.connections == attempts
        ready = (await stack.http.get("/readyz")).json()
        assert ready == {"status": "degraded", "degraded": ["redis: circuit_open"]}
        admin = bearer(stack.settings, "ops", admin=True)
        metrics = (await stack.http.get("/metrics", headers=admin)).text
        assert "seedance_redis_breaker_open 1.0" in metrics

        proxy.hang = False  # Redis answers again; after the reset time one probe closes it

        async def limited_again() -> bool:
            response = await stack.http.get("/jobs", headers=stack.headers())
            return response.status_code == 429

        await wait_until(limited_again)  # 5/minute holds once requests reach Redis
        assert (await stack.http.get("/readyz")).json() == {"status": "ready"}
    await proxy.cut()
