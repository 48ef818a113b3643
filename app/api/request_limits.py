"""Size caps on requests, for every route, before anything parses them.

Headers over MAX_REQUEST_HEADER_BYTES in total: 431. A declared Content-Length over
MAX_REQUEST_BODY_BYTES (or the larger cap of a route made for files: `POST /uploads`, whose
own code then applies the caller's caps as the file streams) is refused at once; a chunked
body is counted as it streams and cut off when it passes the cap: 413. All as problem+json.
"""

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import problem_response


class RequestLimitsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_header_bytes: int,
        larger_bodies: dict[tuple[str, str], int],
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.larger_bodies = larger_bodies  # (method, path) -> its cap

    def _body_detail(self, cap: int) -> str:
        return f"Request bodies are limited to {cap} bytes."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if sum(len(name) + len(value) for name, value in headers) > self.max_header_bytes:
            response = problem_response(
                431,
                "headers_too_large",
                f"Request headers are limited to {self.max_header_bytes} bytes in total.",
            )
            await response(scope, receive, send)
            return
        cap = self.larger_bodies.get((scope["method"], scope["path"]), self.max_body_bytes)
        declared = dict(headers).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > cap:
            await problem_response(413, "body_too_large", self._body_detail(cap))(
                scope, receive, send
            )
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    # an HTTPException, so FastAPI's body parsing passes it through as is
                    raise HTTPException(413, self._body_detail(cap))
            return message

        await self.app(scope, counted_receive, send)
