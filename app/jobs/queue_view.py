"""The queue's order between two readings: a job's place, a newcomer's, a job leaving,
each in O(log n) steps of Python, whatever the length of the line.

A reading (`scheduler.queue_order`) gives every waiting job its fair-share key; the order
is the keys' ascending order, and a job's place is the number of keys below its own (a
bisection of one sorted list: moving its tail is a memmove, not Python). A key's turn
names the place of its owner's previous job, the order's tie-break (`fair_schedule`); a
reading gives each job a label, its index, and a turn is the previous job's label plus
one. A newcomer gets a label between its neighbours' (a fraction: exact however many
come), so labels stay in the order's order while jobs come and go, and no key is ever
rewritten: a job that leaves takes out its own key and nothing else.
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
    `in_use` are held; `probing`: one submission may go above the cap."""

    cap: int | None
    in_use: int
    probing: bool

    @property
    def free(self) -> int | None:
        """Slots to fill now (None: no limit known): the cap's room, else one probe while
        no other is out (at most one job above the cap)."""
        if self.cap is None:
            return None
        if self.in_use < self.cap:
            return self.cap - self.in_use
        return 1 if self.probing and self.in_use == self.cap else 0


@dataclass(slots=True)
class _Entry:
    key: Any
    job: Waiting
    label: int | Fraction


class QueueView:
    """Every waiting job in the order it would be sent (FIFO: by creation, the key being
    (created_at, id)), with the account's capacity and the slots each owner holds."""

    def __init__(
        self,
        schedule: Iterable[tuple[Any, Waiting]],
        account: Capacity,
        held: dict[str, int],
        last_sent: dict[str, datetime],
        fair: bool = True,
    ) -> None:
        self.account, self.held, self.last_sent, self.fair = account, held, last_sent, fair
        self._keys: list[Any] = []
        self._entries: dict[uuid.UUID, _Entry] = {}
        self._owners: dict[str, dict[uuid.UUID, None]] = {}  # each owner's jobs, in order
        # each owner's jobs given a key, those that left since included: a newcomer's share
        # stays above its owner's other jobs' (its owner's order kept)
        self._taken: dict[str, int] = {}
        for key, job in schedule:
            self.append(key, job)

    def append(self, key: Any, job: Waiting) -> None:
        """As the reading orders them: `key` is above every key so far."""
        self._entries[job.id] = _Entry(key, job, len(self._keys))
        self._keys.append(key)
        self._owners.setdefault(job.owner, {})[job.id] = None
        self._taken[job.owner] = self._taken.get(job.owner, 0) + 1

    def __len__(self) -> int:
        return len(self._keys)

    def order(self) -> Iterator[Waiting]:
        return (self._entries[key[-1]].job for key in self._keys)

    def place_of(self, job_id: uuid.UUID) -> int | None:
        entry = self._entries.get(job_id)
        return None if entry is None else bisect.bisect_left(self._keys, entry.key)

    def admit(self, job: Waiting, weight: int) -> int:
        """Its place: a job created after the reading stands as its owner's newest waiting
        job, by the key fair share would give it (FIFO: by its creation), which is where
        the next reading puts it."""
        if (place := self.place_of(job.id)) is not None:
            return place
        mine = self._owners.setdefault(job.owner, {})
        if not self.fair:
            key: Any = (job.created_at, job.id)
        else:
            taken = self._taken.get(job.owner, 0)
            share = (self.held.get(job.owner, 0) + taken + 0.5) / weight
            turn = (
                (1, self._entries[next(reversed(mine))].label + 1)
                if mine
                else (0, self.last_sent.get(job.owner, NEVER))
            )
            key = (share, turn, job.created_at, job.id)
        place = bisect.bisect_right(self._keys, key)
        self._keys.insert(place, key)
        self._entries[job.id] = _Entry(key, job, self._label_between(place))
        mine[job.id] = None
        self._taken[job.owner] = self._taken.get(job.owner, 0) + 1
        return place

    def leave(self, job_id: uuid.UUID) -> None:
        """It was sent, canceled or failed: out of the order."""
        entry = self._entries.pop(job_id, None)
        if entry is None:
            return
        del self._keys[bisect.bisect_left(self._keys, entry.key)]
        mine = self._owners[entry.job.owner]
        del mine[job_id]
        if not mine:  # its next job is its first again
            del self._owners[entry.job.owner], self._taken[entry.job.owner]

    def _label_between(self, place: int) -> Fraction:
        before = self._label_at(place - 1) if place > 0 else -1
        after = self._label_at(place + 1) if place + 1 < len(self._keys) else before + 2
        return Fraction(before + after, 2)

    def _label_at(self, place: int) -> int | Fraction:
        return self._entries[self._keys[place][-1]].label
