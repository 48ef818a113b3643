"""A product's server receiving our webhooks over real HTTP, as a receiver's author would
write it: every delivery is verified with the `standardwebhooks` library."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from testkit.harness import serve

ERROR_BODY = "receiver broke: " + "x" * 5000  # longer than the 1 KB the service keeps


class Mode(StrEnum):
    OK = "ok"
    ERROR = "error"  # 500
    HANG = "hang"  # accepts the request and never answers (until released)
    REDIRECT = "redirect"  # 307 to a private address
    NUL = "nul"  # 200, with a NUL byte in its answer (Postgres text refuses NUL)
    ECHO = "echo"  # 200, answering with what it was sent (receivers often do)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: str
    verified_by: list[int]  # the indexes of `Receiver.secrets` that verify it
    answered: bool = False  # with a 2xx
    arrived_at: float = field(default_factory=time.time)  # wall clock, as payload timestamps

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.body)
        return data


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)
    mode: Mode = Mode.OK
    received: list[Delivery] = field(default_factory=list)  # every request, answered or not
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def accepted(self) -> list[Delivery]:
        """The deliveries this receiver answered 2xx (each verified by a secret it holds)."""
        return [d for d in self.received if d.answered]

    def unique(self) -> dict[str, Delivery]:
        """Accepted deliveries by webhook-id (what a de-duplicating receiver keeps)."""
        return {d.webhook_id: d for d in self.accepted()}

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            body = (await request.body()).decode()
            headers = dict(request.headers)
            verified = [i for i, s in enumerate(self.secrets) if verifies(s, body, headers)]
            delivery = Delivery(headers, body, verified)
            self.received.append(delivery)
            self.arrived.set()
            mode = self.mode
            if mode is Mode.HANG:
                await asyncio.wait_for(self.release.wait(), 120)
                return Response(status_code=204)
            if mode is Mode.ERROR:
                return Response(ERROR_BODY, status_code=500)
            if mode is Mode.REDIRECT:
                return Response(status_code=307, headers={"location": "http://10.0.0.1/steal"})
            if not verified:
                return Response("bad signature", status_code=401)
            delivery.answered = True
            if mode is Mode.ECHO:
                return Response(body, status_code=200, media_type="application/json")
            if mode is Mode.NUL:
                return Response(b"ok\x00" + body.encode()[:64], status_code=200)
            return Response(status_code=204)

        return app


def verifies(secret: str, body: str, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


@asynccontextmanager
async def receiving(receiver: Receiver, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Serve `receiver` on a loopback port (or on `sock`, bound and not yet listening);
    yields its webhook URL."""
    async with serve(receiver.app(), sock) as url:
        try:
            yield f"{url}/hook"
        finally:
            receiver.release.set()
