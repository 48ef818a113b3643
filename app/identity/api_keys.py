"""Service API keys: how the product's servers (a batch pipeline, a CMS) call the API as
a subject of their own, with a plan, without borrowing a user's token.

A key is `sbff_live_` and 40 random letters and digits: the prefix lets secret scanners
find leaked ones. It is shown once, at creation; the database keeps its SHA-256 (a long
random secret needs no slow hash) and its first characters, to recognise it in a list.
Revoked or expired keys are refused on the next request: a key that may exist is looked
up every time. One that cannot is refused without the database (`KnownKeys`), so guessing
costs none. The last use is recorded at most once a minute per key.
"""

import asyncio
import hashlib
import re
import secrets
import string
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import ApiKey
from app.identity.plans import Plans
from app.identity.verifier import Principal, unauthorized
from app.kit.errors import ProblemError

PREFIX = "sbff_live_"
_ALPHABET = string.ascii_letters + string.digits
_RANDOM_CHARS = 40
_SHOWN_CHARS = len(PREFIX) + 4
LAST_USE_RESOLUTION = timedelta(minutes=1)
KNOWN_KEYS_SECONDS = 1.0  # how stale the known keys may be when a key is not among them


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_WELL_FORMED = re.compile(rf"{PREFIX}[A-Za-z0-9]{{{_RANDOM_CHARS}}}")


def looks_like_a_key(credential: str) -> bool:
    return credential.startswith(PREFIX)


def is_well_formed(credential: str) -> bool:
    """What `create_key` makes: anything else is refused without a lookup."""
    return _WELL_FORMED.fullmatch(credential) is not None


def api_key_not_found() -> ProblemError:
    return ProblemError(404, "api_key_not_found", "No such API key.")


async def create_key(
    session: AsyncSession,
    *,
    subject: str,
    plan: str | None,
    description: str | None,
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    """The new key's row and the key itself (the only time it exists outside its holder)."""
    key = PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))
    row = ApiKey(
        key_hash=_digest(key),
        prefix=key[:_SHOWN_CHARS],
        subject=subject,
        plan=plan,
        description=description,
        expires_at=expires_at,
    )
    session.add(row)
    await session.commit()
    return row, key


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    return list(await session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


async def get_key(session: AsyncSession, key_id: uuid.UUID) -> ApiKey:
    row = await session.get(ApiKey, key_id)
    if row is None:
        raise api_key_not_found()
    return row


async def revoke_key(session: AsyncSession, key_id: uuid.UUID) -> None:
    """Refused from the next request on; revoking again is fine."""
    row = await get_key(session, key_id)
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    await session.commit()


async def forget_subject(session: AsyncSession, subject: str, pseudonym: str) -> None:
    """A user's erasure revokes their keys; the rows stay, under the erasure's pseudonym and
    without the description an admin wrote about them."""
    await session.execute(
        update(ApiKey)
        .where(ApiKey.subject == subject)
        .values(
            subject=pseudonym,
            description=None,
            revoked_at=func.coalesce(ApiKey.revoked_at, datetime.now(UTC)),
        )
    )


class KnownKeys:
    """The digests of every key not revoked, in this process: a key not among them is
    refused without the database. Read on the first question, then again on a miss once
    they are KNOWN_KEYS_SECONDS old, so a flood of guesses costs one query a second and a
    key made on another replica is known here within a second."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._digests: frozenset[str] = frozenset()
        self._read_at = float("-inf")
        self._reading = asyncio.Lock()

    async def may_exist(self, key: str) -> bool:
        digest = _digest(key)
        if digest in self._digests:
            return True
        async with self._reading:
            if time.monotonic() - self._read_at >= KNOWN_KEYS_SECONDS:
                await self._read()
        return digest in self._digests

    def learn(self, key: str) -> None:
        """A key made here: known at once (other replicas know it within a second)."""
        self._digests |= {_digest(key)}

    async def _read(self) -> None:
        async with self._sessionmaker() as session:
            found = await session.scalars(
                select(ApiKey.key_hash).where(ApiKey.revoked_at.is_(None))
            )
            self._digests = frozenset(found)
        self._read_at = time.monotonic()


async def authenticate(
    sessionmaker: async_sessionmaker[AsyncSession], plans: Plans, key: str
) -> Principal:
    """The principal a presented key acts as, or a 401."""
    now = datetime.now(UTC)
    async with sessionmaker() as session, session.begin():
        row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == _digest(key)))
        if row is None or row.revoked_at is not None:
            raise unauthorized("The API key is invalid or revoked.")
        if row.expires_at is not None and row.expires_at <= now:
            raise unauthorized("The API key has expired.")
        if row.last_used_at is None or now - row.last_used_at >= LAST_USE_RESOLUTION:
            await session.execute(
                update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now)
            )
        return Principal(row.subject, plans.named(row.plan))
