"""The queue in front of the Seedance account: how many jobs may be sent now, and which.

The account renders a few tasks at once and answers 429 above that. Jobs being submitted
plus jobs rendering upstream (`HOLDS_SLOT_SQL`) never exceed its cap, counted in the
database on every claim, so the cap holds across replicas; claims are serialized by a
Postgres advisory lock (SQLite: one process, one dispatcher). The cap is
SEEDANCE_MAX_CONCURRENT_TASKS when set, else learned: a 429 sets it to the slots the
account had taken, and holds submissions until a slot frees or a probe interval (its
`Retry-After`) passes; then one submission may go above the cap, and an accepted one
raises it. What is learned lives in `upstream_capacity`, for every replica.

Which jobs go is fair share (QUEUE_POLICY=fair): the next slot goes to the owner with the
fewest jobs upstream relative to their plan's `queue_weight`, ties to the oldest waiting
job; one owner's jobs go in their order. `fifo` sends the oldest job first. The same
order, computed over every waiting job, is what `queue_order` reports.
"""

import heapq
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import islice
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import QueuePolicy, Settings
from app.db.models import HOLDS_SLOT_SQL, Job, OutboundEvent, UpstreamCapacity
from app.db.session import lock_or_insert, upsert_insert
from app.identity.plans import Plans
from app.jobs.queue_view import NEVER, Capacity, QueueView, Waiting
from app.jobs.states import JobStatus, ModerationState
from app.kit.pacing import Pacer

HOLDS_SLOT = text(HOLDS_SLOT_SQL)
CLAIM_LOCK = 0x5EEDA7CE  # the advisory lock that serializes claims across replicas
RECENT_TURNS = timedelta(hours=1)  # how far back "sent to least recently" looks
# a whole reading of the queue (10,000 jobs: tens of ms of Python) goes this many jobs at
# a time, each step a few milliseconds, the loop's other work between them (`Pacer`)
READ_IN_STEPS = 500
_CAPACITY_ROW = 1


def waiting(now: datetime) -> list[ColumnElement[bool]]:
    """Queued jobs that may be sent: not claimed, not held back by a retry's delay, and
    not waiting for moderation (accepted `unchecked`)."""
    return [
        Job.status == JobStatus.QUEUED,
        Job.submit_started_at.is_(None),
        or_(Job.next_attempt_at.is_(None), Job.next_attempt_at <= now),
        Job.moderation_state.is_distinct_from(ModerationState.UNCHECKED),
    ]


async def serialize_claims(session: AsyncSession) -> None:
    """Hold the claim lock until the transaction ends (Postgres; SQLite has one process)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))


async def upstream_by_owner(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(Job.owner, func.count()).where(HOLDS_SLOT).group_by(Job.owner)
    )
    return {owner: count for owner, count in rows.all()}


async def capacity(
    session: AsyncSession, settings: Settings, in_use: int, now: datetime
) -> Capacity:
    row = await session.get(UpstreamCapacity, _CAPACITY_ROW, populate_existing=True)
    learned = row.learned_cap if row is not None else None
    caps = [c for c in (settings.seedance_max_concurrent_tasks, learned) if c is not None]
    cap = min(caps) if caps else None
    ceiling = settings.seedance_max_concurrent_tasks
    probing = (
        row is not None
        and learned is not None
        and (row.probe_at is None or row.probe_at <= now)
        and (ceiling is None or learned < ceiling)
    )
    paused = row is not None and row.paused_reason is not None
    probe_at = row.resume_probe_at if row is not None else None
    probe_due = paused and (probe_at is None or probe_at <= now)
    return Capacity(cap, in_use, probing, paused, probe_due)


def _upsert_capacity(session: AsyncSession, **values: object) -> Any:
    statement = upsert_insert(session, UpstreamCapacity).values(id=_CAPACITY_ROW, **values)
    return statement.on_conflict_do_update(index_elements=["id"], set_=values)


async def record_account_credits(session: AsyncSession, credits: int, at: datetime) -> None:
    """The Seedance account's balance, as an operator read it (forecasts start from it)."""
    await session.execute(_upsert_capacity(session, account_credits=credits, account_credits_at=at))


async def learn_rate_limited(
    session: AsyncSession, settings: Settings, retry_after: float | None, now: datetime
) -> None:
    """A 429: the account is full with the tasks it renders for us now (submissions still
    on the wire are not counted: they may be refused too), and nothing above them goes
    before a slot frees or the probe time comes."""
    rendering = (
        await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.status == JobStatus.RUNNING, Job.media_status.is_(None))
        )
        or 0
    )
    wait = retry_after if retry_after is not None else settings.queue_probe_seconds
    await session.execute(
        _upsert_capacity(
            session,
            learned_cap=max(1, rendering),
            probe_at=now + timedelta(seconds=wait),
            rate_limited_at=now,
        )
    )


class PauseReason(StrEnum):
    OUT_OF_CREDITS = "upstream_out_of_credits"  # Seedance's 402
    KEY_REJECTED = "upstream_key_rejected"  # its 401 or 403


@dataclass(frozen=True, slots=True)
class Pause:
    reason: PauseReason
    since: datetime


def pause_of(account: UpstreamCapacity | None) -> Pause | None:
    """Why and since when dispatch is paused (None: it runs)."""
    if account is None or account.paused_reason is None or account.paused_since is None:
        return None
    return Pause(PauseReason(account.paused_reason), account.paused_since)


class AccountNotice(StrEnum):
    """Outbound admin events about the Seedance account (app/outbound fans them out)."""

    PAUSED = "account.paused"
    RESUMED = "account.resumed"


async def pause(session: AsyncSession, settings: Settings, reason: PauseReason) -> bool:
    """The account cannot work: no job goes until a probe is accepted (the next in
    ACCOUNT_PROBE_SECONDS). True when this starts the pause (then `account.paused` is in
    the outbox, in the same transaction)."""
    now = datetime.now(UTC)
    row, _ = await lock_or_insert(session, UpstreamCapacity, _CAPACITY_ROW)
    assert row is not None  # the capacity row is never deleted
    started = row.paused_reason is None
    row.paused_reason = reason.value
    row.resume_probe_at = now + timedelta(seconds=settings.account_probe_seconds)
    if started:
        row.paused_since = now
        data = {"reason": reason.value, "since": now.isoformat()}
        session.add(OutboundEvent(type=AccountNotice.PAUSED, data=data, at=now))
    return started


async def resume(session: AsyncSession) -> bool:
    """A submission was accepted: the account works again. True when it was paused (then
    `account.resumed` is in the outbox, in the same transaction)."""
    paused = pause_of(await session.get(UpstreamCapacity, _CAPACITY_ROW))
    if paused is None:
        return False  # the common case: no lock taken
    resumed = await session.execute(
        update(UpstreamCapacity)
        .where(UpstreamCapacity.id == _CAPACITY_ROW, UpstreamCapacity.paused_since == paused.since)
        .values(paused_reason=None, paused_since=None, resume_probe_at=None)
        .returning(UpstreamCapacity.id)
    )
    if resumed.first() is None:
        return False  # another replica's acceptance resumed it first
    now = datetime.now(UTC)
    data = {"reason": paused.reason.value, "since": paused.since.isoformat(), "at": now.isoformat()}
    session.add(OutboundEvent(type=AccountNotice.RESUMED, data=data, at=now))
    return True


async def learn_accepted(session: AsyncSession) -> None:
    """An accepted submission above the learned cap: the account has that much room."""
    held = select(func.count()).select_from(Job).where(HOLDS_SLOT).scalar_subquery()
    await session.execute(
        update(UpstreamCapacity)
        .where(UpstreamCapacity.id == _CAPACITY_ROW, UpstreamCapacity.learned_cap < held)
        .values(learned_cap=held)
    )


def fair_order(
    candidates: Iterable[Waiting],
    held: dict[str, int],
    weights: Plans,
    limit: int | None,
    last_sent: dict[str, datetime] | None = None,
) -> list[Waiting]:
    return [job for _, job in fair_schedule(candidates, held, weights, limit, last_sent)]


# a job's place in fair share: (share, turn, created_at, id), compared as a tuple
FairKey = tuple[float, tuple[int, Any], datetime, uuid.UUID]


def fair_schedule(
    candidates: Iterable[Waiting],
    held: dict[str, int],
    weights: Plans,
    limit: int | None,
    last_sent: dict[str, datetime] | None = None,
) -> list[tuple[FairKey, Waiting]]:
    """Candidates in the order fair share sends them (each owner's in their own order):
    repeatedly the owner with the fewest jobs upstream for their weight, counting the
    ones this order already sent; ties to the owner sent to least recently (`last_sent`;
    a newcomer first), then to the oldest job.

    "Fewest for their weight" is (held + 1/2) / weight: Sainte-Laguë's divisor, which
    gives each owner slots in proportion to its weight at any cap. Plain held / weight
    favours light owners (a weight-4 owner holding 4 ties with a weight-1 owner holding
    1) and (held + 1) / weight heavy ones (tests/unit/test_fair_share.py measures both
    off by half or more at a cap of 10). The least recently sent owner wins a tie, not
    the oldest job: when there are as many heavy owners as slots, the one whose render
    just ended holds none, like a newcomer, and its backlog's jobs are always older
    (bench.saturation: light users' jobs waited as long as FIFO's).

    With each job, its key: the order is the keys' ascending order (an owner's next job
    always has a larger share than the one just sent), which `QueueView.admit` uses."""
    return list(islice(fair_keys(candidates, held, weights, last_sent), limit))


def fair_keys(
    candidates: Iterable[Waiting],
    held: dict[str, int],
    weights: Plans,
    last_sent: dict[str, datetime] | None = None,
) -> Iterator[tuple[FairKey, Waiting]]:
    """`fair_schedule`'s order, one job at a time (a caller may stop, or pause, at any)."""
    last_sent = last_sent or {}
    by_owner: dict[str, list[Waiting]] = {}
    for job in candidates:
        by_owner.setdefault(job.owner, []).append(job)
    heap: list[tuple[float, tuple[int, Any], datetime, uuid.UUID, str, int]] = []
    for owner, jobs in by_owner.items():
        jobs.sort(key=lambda j: (j.created_at, j.id))
        weight = weights.named(jobs[0].plan).queue_weight
        share = (held.get(owner, 0) + 0.5) / weight
        turn: tuple[int, Any] = (0, last_sent.get(owner, NEVER))  # before anyone sent to
        heap.append((share, turn, jobs[0].created_at, jobs[0].id, owner, weight))
    heapq.heapify(heap)
    placed = 0
    taken = {owner: 0 for owner in by_owner}
    while heap:
        share, turn, created_at, job_id, owner, weight = heapq.heappop(heap)
        jobs = by_owner[owner]
        yield (share, turn, created_at, job_id), jobs[taken[owner]]
        placed += 1
        taken[owner] += 1
        if taken[owner] < len(jobs):
            following = jobs[taken[owner]]
            share = (held.get(owner, 0) + taken[owner] + 0.5) / weight
            turn = (1, placed)  # sent to just now: after every owner not sent to yet
            heapq.heappush(heap, (share, turn, following.created_at, following.id, owner, weight))


def fifo_order(candidates: Iterable[Waiting], limit: int | None) -> list[Waiting]:
    return sorted(candidates, key=lambda j: (j.created_at, j.id))[:limit]


async def ordered(
    session: AsyncSession,
    candidates: list[Waiting],
    held: dict[str, int],
    settings: Settings,
    plans: Plans,
    limit: int | None,
) -> list[Waiting]:
    if settings.queue_policy is QueuePolicy.FIFO:
        return fifo_order(candidates, limit)
    owners = {job.owner for job in candidates}
    return fair_order(candidates, held, plans, limit, await last_sent(session, owners))


async def last_sent(session: AsyncSession, owners: set[str]) -> dict[str, datetime]:
    """When each owner's latest job was sent, within the last hour (`ix_jobs_owner_sent`
    reads just that; an owner not sent to for longer ties with a newcomer)."""
    if not owners:
        return {}
    since = datetime.now(UTC) - RECENT_TURNS
    rows = await session.execute(
        select(Job.owner, func.max(Job.submit_started_at))
        .where(Job.owner.in_(owners), Job.submit_started_at >= since)
        .group_by(Job.owner)
    )
    return {owner: sent for owner, sent in rows.all() if sent is not None}


async def candidates(session: AsyncSession, now: datetime, per_owner: int | None) -> list[Waiting]:
    """Waiting jobs, at most `per_owner` of each owner's oldest (all, for None: read
    `READ_IN_STEPS` rows a round trip, so the loop serves requests between them)."""
    columns = (Job.id, Job.owner, Job.plan, Job.created_at)
    if per_owner is None:
        query = select(*columns).where(*waiting(now)).execution_options(yield_per=READ_IN_STEPS)
        found: list[Waiting] = []
        pacer = Pacer()
        async for rows in (await session.stream(query)).partitions():
            found.extend(Waiting(*row) for row in rows)
            await pacer.pause()
        return found
    rank = func.row_number().over(partition_by=Job.owner, order_by=(Job.created_at, Job.id))
    ranked = select(*columns, rank.label("rank")).where(*waiting(now)).subquery()
    query = select(ranked.c.id, ranked.c.owner, ranked.c.plan, ranked.c.created_at).where(
        ranked.c.rank <= per_owner
    )
    return [Waiting(*row) for row in (await session.execute(query)).all()]


async def pick(
    session: AsyncSession, settings: Settings, plans: Plans, room: int
) -> tuple[list[uuid.UUID], Capacity | None]:
    """Under the claim lock: the ids of the jobs to send now (at most `room`, this
    process's free submission slots, and what the account's cap leaves), in order, and
    the account's capacity (None when nothing waits: one query, nothing counted)."""
    now = datetime.now(UTC)
    waiting = await candidates(session, now, room)
    if not waiting:
        return [], None
    held = await upstream_by_owner(session)
    account = await capacity(session, settings, sum(held.values()), now)
    free = account.free
    limit = room if free is None else min(room, free)
    if limit <= 0:
        return [], account
    if account.paused:  # the one job of this probe: the next waits a probe period
        probe_seconds = timedelta(seconds=settings.account_probe_seconds)
        await session.execute(
            update(UpstreamCapacity)
            .where(UpstreamCapacity.id == _CAPACITY_ROW)
            .values(resume_probe_at=now + probe_seconds)
        )
    chosen = await ordered(session, waiting, held, settings, plans, limit)
    return [job.id for job in chosen], account


async def queue_order(
    session: AsyncSession, settings: Settings, plans: Plans, per_owner: int | None = None
) -> QueueView:
    """The queue as things stand: the waiting jobs (each owner's first `per_owner`, or all)
    in the order the scheduler would send them, the account's capacity, and the slots
    each owner holds."""
    now = datetime.now(UTC)
    held = await upstream_by_owner(session)
    account = await capacity(session, settings, sum(held.values()), now)
    waiting = await candidates(session, now, per_owner)
    schedule: Iterable[tuple[Any, Waiting]]
    if settings.queue_policy is QueuePolicy.FIFO:
        view = QueueView([], account, held, {}, fair=False)
        schedule = (((job.created_at, job.id), job) for job in fifo_order(waiting, None))
    else:
        sent = await last_sent(session, {job.owner for job in waiting})
        view = QueueView([], account, held, sent)
        schedule = fair_keys(waiting, held, plans, sent)
    pacer = Pacer()
    for count, (key, job) in enumerate(schedule, 1):
        view.append(key, job)
        if count % READ_IN_STEPS == 0:
            await pacer.pause()  # the requests waiting on this loop go first
    return view


async def learned_capacity(session: AsyncSession) -> UpstreamCapacity | None:
    """What the 429s taught about the account's cap (None before any)."""
    return await session.get(UpstreamCapacity, _CAPACITY_ROW)


async def waiting_by(
    session: AsyncSession, column: Literal["owner", "plan"]
) -> tuple[dict[str, int], datetime | None]:
    """Jobs waiting for a slot by owner or plan, and when the oldest was created."""
    key = Job.owner if column == "owner" else Job.plan
    rows = (
        await session.execute(
            select(key, func.count(), func.min(Job.created_at))
            .where(Job.status == JobStatus.QUEUED, Job.submit_started_at.is_(None))
            .group_by(key)
        )
    ).all()
    oldest = min((created for _, _, created in rows), default=None)
    return {value or "": count for value, count, _ in rows}, oldest
