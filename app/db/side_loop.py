"""A second event loop in a thread of its own, with an engine of its own: for reads of many
rows whose decoding would hold the serving loop for as long as it takes.

Reading the whole queue (every waiting job, then its fair-share order) is about 130 ms of
Python at 10,000 waiting jobs (bench.queue_reading): on the loop that serves requests, each
request in flight waited that long. Here the reading runs on this thread's loop, through
one connection of its own; the thread still takes the GIL for its Python, but hands it
back every `sys.getswitchinterval()` (5 ms), so the serving loop runs between its steps.
"""

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.session import create_engine, create_sessionmaker

T = TypeVar("T")


class SideLoop:
    """Started on first use; `close` stops it (its engine disposed on its own loop)."""

    def __init__(self, settings: Settings, name: str) -> None:
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._engine: AsyncEngine | None = None
        self._sessionmaker: async_sessionmaker[AsyncSession] | None = None

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work` with a session of this loop's engine, run on this loop."""
        if not self._thread.is_alive():
            self._thread.start()
        running = asyncio.run_coroutine_threadsafe(self._in_session(work), self._loop)
        return await asyncio.wrap_future(running)

    async def close(self) -> None:
        if self._thread.is_alive():
            disposed = asyncio.run_coroutine_threadsafe(self._dispose(), self._loop)
            await asyncio.wrap_future(disposed)
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join)
        self._loop.close()

    async def _in_session(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        if self._sessionmaker is None:
            self._engine = create_engine(self._settings, pool_size=1)
            self._sessionmaker = create_sessionmaker(self._engine)
        async with self._sessionmaker() as session:
            return await work(session)

    async def _dispose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
