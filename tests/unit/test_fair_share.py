"""The scheduler's order: fair share by plan weight, each owner's jobs in their order, FIFO
for comparison; and how much of the account's cap is free, probe included."""

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from app.config import Plan, Settings
from app.identity.plans import Plans
from app.jobs.live.queue_board import estimate
from app.jobs.queue_view import Capacity, QueueView, Waiting
from app.jobs.scheduler import fair_order, fair_schedule, fifo_order

T0 = datetime(2026, 12, 1, tzinfo=UTC)
SETTINGS = Settings(  # type: ignore[call-arg]
    _env_file=None, plans={"free": Plan(), "pro": Plan(queue_weight=4)}, default_plan="free"
)
PLANS = Plans(SETTINGS)


def backlog(owner: str, count: int, *, plan: str = "free", start: int = 0) -> list[Waiting]:
    return [
        Waiting(uuid.uuid4(), owner, plan, T0 + timedelta(seconds=start + i)) for i in range(count)
    ]


def test_a_light_user_goes_before_a_heavy_backlog_that_came_first() -> None:
    heavy = backlog("heavy", 30)
    light = backlog("light", 1, start=100)
    order = fair_order(heavy + light, {"heavy": 2}, PLANS, None)
    assert order[0] == light[0]  # the heavy user already holds two slots
    assert order[1:] == heavy  # and its own jobs keep their order


def test_equal_owners_alternate_ties_to_the_oldest_job() -> None:
    a, b = backlog("a", 3), backlog("b", 3, start=1)
    assert [j.owner for j in fair_order(a + b, {}, PLANS, None)] == ["a", "b"] * 3


def test_fifo_sends_the_oldest_first() -> None:
    heavy = backlog("heavy", 5)
    light = backlog("light", 1, start=100)
    assert fifo_order(light + heavy, None) == heavy + light


def test_a_tie_goes_to_the_owner_sent_to_least_recently() -> None:
    """Three heavy owners and three slots: the one whose render just ended holds none, like
    a newcomer, and its backlog is older; the newcomer goes first all the same, then the
    heavy owners in the order they were last sent to."""
    heavy = {owner: backlog(owner, 5) for owner in ("h1", "h2", "h3")}
    light = backlog("light", 1, start=100)
    waiting = [job for jobs in heavy.values() for job in jobs] + light
    sent = {"h1": T0 + timedelta(minutes=3), "h2": T0 + timedelta(minutes=1)}
    sent["h3"] = T0 + timedelta(minutes=2)  # its render just ended: it holds none
    order = fair_order(waiting, {"h1": 1, "h2": 1}, PLANS, 4, sent)
    assert [job.owner for job in order] == ["light", "h3", "h2", "h1"]


def test_weights_hold_within_20_percent_over_a_long_saturated_run() -> None:
    """A discrete run: a cap of 10 slots, renders of 7 to 13 ticks, one pro user (weight
    4) and three free users with endless backlogs; every tick the freed slots are filled
    in the scheduler's order, counting the slots each owner holds."""
    owners = {"pro": "pro", "f1": "free", "f2": "free", "f3": "free"}
    queues = {o: backlog(o, 3000, plan=p) for o, p in owners.items()}
    sent = dict.fromkeys(owners, 0)
    running: list[tuple[int, str]] = []  # (tick it ends, owner)
    cap = 10
    for tick in range(2000):
        running = [(end, owner) for end, owner in running if end > tick]
        held: dict[str, int] = {}
        for _, owner in running:
            held[owner] = held.get(owner, 0) + 1
        waiting = [job for queue in queues.values() for job in queue[:cap]]
        for job in fair_order(waiting, held, PLANS, cap - len(running)):
            queues[job.owner].remove(job)
            running.append((tick + 7 + len(running) % 7, job.owner))
            if tick >= 100:  # after the start, when every owner is in the running
                sent[job.owner] += 1
    free = [sent[o] for o in ("f1", "f2", "f3")]
    assert sent["pro"] / (sum(free) / 3) == pytest.approx(4, rel=0.2)
    # equal weights get equal shares: Jain's fairness index across the free users
    jain = sum(free) ** 2 / (len(free) * sum(s * s for s in free))
    assert jain > 0.99


@pytest.mark.parametrize(
    ("capacity", "free"),
    [
        (Capacity(cap=None, in_use=50, probing=False), None),  # nothing known: no limit
        (Capacity(cap=4, in_use=1, probing=False), 3),
        (Capacity(cap=4, in_use=4, probing=False), 0),
        (Capacity(cap=4, in_use=4, probing=True), 1),  # one probe above the learned cap
        (Capacity(cap=4, in_use=5, probing=True), 0),  # never a second one while it is out
        (Capacity(cap=4, in_use=6, probing=False), 0),
    ],
)
def test_free_slots(capacity: Capacity, free: int | None) -> None:
    assert capacity.free == free


def random_queue(
    rng: random.Random, owners: list[str], jobs_of: Callable[[str], int]
) -> tuple[dict[str, str], list[Waiting], dict[str, int], dict[str, datetime], QueueView]:
    """A queue as a reading finds it: random plans, `jobs_of(owner)` waiting jobs each,
    slots held and last turns; with its fair-share view."""
    plan_of = {owner: rng.choice(["free", "pro"]) for owner in owners}
    waiting = [
        Waiting(uuid.uuid4(), owner, plan_of[owner], T0 + timedelta(seconds=rng.random() * 100))
        for owner in owners
        for _ in range(jobs_of(owner))
    ]
    held = {owner: rng.randint(0, 3) for owner in owners if rng.random() < 0.6}
    sent = {o: T0 - timedelta(seconds=rng.randint(1, 50)) for o in owners if rng.random() < 0.5}
    schedule = fair_schedule(waiting, held, PLANS, None, sent)
    view = QueueView(schedule, Capacity(None, 0, False), held, sent)
    return plan_of, waiting, held, sent, view


def admit(view: QueueView, job: Waiting) -> int:
    return view.admit(job, PLANS.named(job.plan).queue_weight)


def places_are_the_order(view: QueueView) -> bool:
    """Each job's place is its index in the order: 0..n-1, each once."""
    return [view.place_of(job.id) for job in view.order()] == list(range(len(view)))


@pytest.mark.parametrize("seed", range(40))
def test_jobs_created_after_a_reading_are_placed_where_a_new_reading_would_put_them(
    seed: int,
) -> None:
    """`QueueView.admit` (the answer to a create, without a reading of its own) agrees with
    the order read again with the new jobs in it: random owners, plans, slots held and
    turns; newcomers of owners with and without jobs waiting, one after another."""
    rng = random.Random(seed)
    owners = [f"u{i}" for i in range(rng.randint(1, 6))]
    plan_of, waiting, held, sent, view = random_queue(rng, owners, lambda _: rng.randint(0, 5))
    by_creation = [((job.created_at, job.id), job) for job in fifo_order(waiting, None)]
    fifo = QueueView(by_creation, Capacity(None, 0, False), held, {}, fair=False)
    newcomers: list[Waiting] = []
    for second in range(3):
        owner = rng.choice([*owners, "newcomer"])
        job = Waiting(
            uuid.uuid4(), owner, plan_of.get(owner, "free"), T0 + timedelta(seconds=200 + second)
        )
        newcomers.append(job)
        again = fair_order([*waiting, *newcomers], held, PLANS, None, sent)
        assert admit(view, job) == again.index(job)
        assert list(view.order()) == again and places_are_the_order(view)
        assert admit(fifo, job) == len(waiting) + second
        assert admit(view, job) == again.index(job)  # admitted twice: placed once


@pytest.mark.parametrize("seed", range(40))
def test_a_job_that_leaves_the_line_leaves_the_order_a_new_reading_would_give(
    seed: int,
) -> None:
    """`QueueView.leave` (a canceled job, between readings) keeps the view the order read again:
    an owner's only waiting job taken out, and newcomers admitted after it still placed
    where a new reading puts them."""
    rng = random.Random(seed)
    owners = [f"u{i}" for i in range(rng.randint(2, 6))]
    plan_of, waiting, held, sent, view = random_queue(
        rng, owners, lambda owner: 1 if owner == owners[0] else rng.randint(0, 4)
    )
    alone = next(job for job in waiting if job.owner == owners[0])  # its owner's only one
    view.leave(alone.id)
    remaining = [job for job in waiting if job is not alone]
    assert list(view.order()) == fair_order(remaining, held, PLANS, None, sent)
    assert view.place_of(alone.id) is None and places_are_the_order(view)
    newcomers: list[Waiting] = []
    for second in range(3):
        owner = rng.choice(owners[1:])
        job = Waiting(uuid.uuid4(), owner, plan_of[owner], T0 + timedelta(seconds=200 + second))
        newcomers.append(job)
        again = fair_order([*remaining, *newcomers], held, PLANS, None, sent)
        assert admit(view, job) == again.index(job)
        assert places_are_the_order(view)


@pytest.mark.parametrize("seed", range(10))
def test_places_stay_the_order_through_many_comings_and_goings(seed: int) -> None:
    """Hundreds of newcomers and leavers between two readings, many newcomers landing at
    the same spot (each a new owner, one after another): every place is still its index,
    0..n-1 each once, and each owner's jobs keep their order."""
    rng = random.Random(seed)
    owners = [f"u{i}" for i in range(5)]
    plan_of, waiting, _, _, view = random_queue(rng, owners, lambda _: rng.randint(1, 20))
    jobs = {job.id: job for job in waiting}
    for step in range(400):
        if jobs and rng.random() < 0.4:
            gone = rng.choice(list(jobs))
            view.leave(gone)
            del jobs[gone]
        else:
            owner = rng.choice([*owners, f"new-{step}"])
            job = Waiting(
                uuid.uuid4(), owner, plan_of.get(owner, "free"), T0 + timedelta(seconds=200 + step)
            )
            jobs[job.id] = job
            admit(view, job)
        assert places_are_the_order(view) and len(view) == len(jobs)
    order = list(view.order())
    for owner in {job.owner for job in order}:
        mine = [job for job in order if job.owner == owner]
        assert mine == sorted(mine, key=lambda job: (job.created_at, job.id))


def test_newcomers_are_those_admitted_and_still_waiting() -> None:
    """What a newer reading may not have seen yet, for the board to carry over."""
    rng = random.Random(7)
    _, waiting, _, _, view = random_queue(rng, ["u0", "u1"], lambda _: 3)
    first, second = (
        Waiting(uuid.uuid4(), "u2", "free", T0 + timedelta(seconds=300 + i)) for i in range(2)
    )
    admit(view, first)
    admit(view, second)
    admit(view, waiting[0])  # read, not new: placed where it was
    view.leave(first.id)
    assert view.newcomers() == [second]


def test_no_start_is_estimated_while_the_account_is_paused() -> None:
    now = datetime.now(UTC)
    running = Capacity(cap=4, in_use=1, probing=False)
    assert estimate(0, running, 30.0, now) == now
    assert estimate(5, running, 30.0, now) == now + timedelta(seconds=(5 - 3 + 1) * 30 / 4)
    paused = Capacity(cap=4, in_use=1, probing=False, paused=True, resume_probe_due=True)
    assert [estimate(p, paused, 30.0, now) for p in (0, 5)] == [None, None]
