"""A round-robin TCP load balancer on loopback, as a fleet's balancer behaves toward a
replica that drains: a backend that refuses a connection is skipped for the next one
(nginx's `proxy_next_upstream error`); connections already open stay with their backend
until either side closes them."""

import asyncio
import contextlib

from testkit.harness import free_port


class TcpBalancer:
    def __init__(self, backend_ports: list[int]) -> None:
        self._backends = list(backend_ports)
        self._turn = 0
        self._server: asyncio.Server | None = None
        self.port = free_port()

    def route_to(self, backend_ports: list[int]) -> None:
        self._backends = list(backend_ports)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in self._backends:
            self._turn += 1
            port = self._backends[self._turn % len(self._backends)]
            with contextlib.suppress(OSError):
                return await asyncio.open_connection("127.0.0.1", port)
        return None

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:  # every replica refuses: the client sees a refused connection
            client_w.transport.abort()
            return
        upstream_r, upstream_w = upstream
        await asyncio.gather(self._pipe(client_r, upstream_w), self._pipe(upstream_r, client_w))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()
