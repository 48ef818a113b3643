"""The queue's order between two readings: a job's place, a newcomer's, a job leaving,
each in O(log n) steps of Python, whatever the length of the line.

A reading (`scheduler.queue_order`) gives every waiting job its fair-share key; the order
is the keys' ascending order, and a job's place is the number of keys below its own (a
bisection of one sorted list: moving its tail is a memmove, not Python). A key's turn
names the place of its owner's previous job, the order's tie-break (`fair_schedule`); a
reading gives each job a label, its index times `LABEL_STEP`, and a turn is the previous
job's label plus one step. A newcomer gets a label between its neighbours' (a fraction
once a gap has been halved 20 times: exact however many come), so labels stay in the
order's order while jobs come and go, and no key is ever rewritten: a job that leaves
takes out its own key and nothing else.

Each job is kept as tuples of numbers, strings and datetimes (its id as an int), which
the garbage collector stops tracking: at 10,000 waiting jobs, objects it would walk in
every full collection, and full collections came with nearly every reading.
"""

import bisect
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Waiting:
    id: uuid.UUID
    owner: str
    plan: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the account takes now: `cap` slots (None: nothing known, no limit), of which
    `in_use` are held; `probing`: one submission may go above the cap; `paused`: the account
    cannot work (out of credits, our key refused) and only a due probe goes."""

    cap: int | None
    in_use: int
    probing: bool
    paused: bool = False  # the account cannot work: nothing goes but a due probe
    resume_probe_due: bool = False

    @property
    def free(self) -> int | None:
        """Slots to fill now (None: no limit known): the cap's room, else one probe while
        no other is out (at most one job above the cap); while paused, the one job of a due
        probe."""
        if self.paused:
            return 1 if self.resume_probe_due else 0
        if self.cap is None:
            return None
        if self.in_use < self.cap:
            return self.cap - self.in_use
        return 1 if self.probing and self.in_use == self.cap else 0


LABEL_STEP = 1 << 20  # room for 20 halvings between two jobs of a reading


class QueueView:
    """Every waiting job in the order it would be sent (FIFO: by creation), with the
    account's capacity and the slots each owner holds."""

    def __init__(
        self,
        schedule: Iterable[tuple[Any, Waiting]],
        account: Capacity,
        held: dict[str, int],
        last_sent: dict[str, datetime],
        fair: bool = True,
    ) -> None:
        self.account, self.held, self.last_sent, self.fair = account, held, last_sent, fair
        self._keys: list[tuple[Any, ...]] = []  # ascending; each ends with its job's id
        # by id: (key, owner, plan, created_at, label)
        self._jobs: dict[int, tuple[tuple[Any, ...], str, str | None, datetime, Any]] = {}
        self._owners: dict[str, dict[int, None]] = {}  # each owner's jobs, in order
        # each owner's jobs given a key, those that left since included: a newcomer's share
        # stays above its owner's other jobs' (its owner's order kept)
        self._taken: dict[str, int] = {}
        self._newcomers: dict[int, None] = {}  # admitted since the reading, still waiting
        for key, job in schedule:
            self.append(key, job)

    def append(self, key: Any, job: Waiting) -> None:
        """As the reading orders them: `key` (`fair_keys`' or FIFO's (created_at, id)) is
        above every key so far."""
        compact: tuple[Any, ...]
        if self.fair:
            share, (sent_before, turn), created_at, job_id = key
            step = turn * LABEL_STEP if sent_before else turn
            compact = (share, sent_before, step, created_at, job_id.int)
        else:
            created_at, job_id = key
            compact = (created_at, job_id.int)
        self._add(compact, job, len(self._keys) * LABEL_STEP)

    def __len__(self) -> int:
        return len(self._keys)

    def order(self) -> Iterator[Waiting]:
        return (self._waiting(key[-1]) for key in self._keys)

    def newcomers(self) -> list[Waiting]:
        """The jobs admitted since the reading and still waiting, oldest first: a newer
        reading may not have seen them yet."""
        return [self._waiting(job_id) for job_id in self._newcomers]

    def place_of(self, job_id: uuid.UUID) -> int | None:
        found = self._jobs.get(job_id.int)
        return None if found is None else bisect.bisect_left(self._keys, found[0])

    def admit(self, job: Waiting, weight: int) -> int:
        """Its place: a job created after the reading stands as its owner's newest waiting
        job, by the key fair share would give it (FIFO: by its creation), which is where
        the next reading puts it."""
        if (place := self.place_of(job.id)) is not None:
            return place
        key: tuple[Any, ...]
        if not self.fair:
            key = (job.created_at, job.id.int)
        else:
            share = (self.held.get(job.owner, 0) + self._taken.get(job.owner, 0) + 0.5) / weight
            mine = self._owners.get(job.owner)
            if mine:  # after its owner's newest: that one's label, one step on
                turn = (1, self._jobs[next(reversed(mine))][4] + LABEL_STEP)
            else:
                turn = (0, self.last_sent.get(job.owner, NEVER))
            key = (share, *turn, job.created_at, job.id.int)
        place = bisect.bisect_right(self._keys, key)
        self._add(key, job, self._label_between(place), place)
        self._newcomers[job.id.int] = None
        return place

    def leave(self, job_id: uuid.UUID) -> None:
        """It was sent, canceled or failed: out of the order."""
        found = self._jobs.pop(job_id.int, None)
        if found is None:
            return
        key, owner = found[0], found[1]
        del self._keys[bisect.bisect_left(self._keys, key)]
        self._newcomers.pop(job_id.int, None)
        mine = self._owners[owner]
        del mine[job_id.int]
        if not mine:  # its next job is its first again
            del self._owners[owner], self._taken[owner]

    def _add(
        self, key: tuple[Any, ...], job: Waiting, label: Any, place: int | None = None
    ) -> None:
        if place is None:
            self._keys.append(key)
        else:
            self._keys.insert(place, key)
        self._jobs[job.id.int] = (key, job.owner, job.plan, job.created_at, label)
        self._owners.setdefault(job.owner, {})[job.id.int] = None
        self._taken[job.owner] = self._taken.get(job.owner, 0) + 1

    def _waiting(self, job_id: int) -> Waiting:
        _, owner, plan, created_at, _ = self._jobs[job_id]
        return Waiting(uuid.UUID(int=job_id), owner, plan, created_at)

    def _label_between(self, place: int) -> Any:
        """A label between the jobs at `place - 1` and `place` (where a newcomer goes)."""
        before = self._label_at(place - 1) if place > 0 else -LABEL_STEP
        after = self._label_at(place) if place < len(self._keys) else before + 2 * LABEL_STEP
        if isinstance(before, int) and isinstance(after, int) and after - before >= 2:
            return (before + after) // 2
        return Fraction(before + after, 2)

    def _label_at(self, place: int) -> Any:
        return self._jobs[self._keys[place][-1]][4]
