"""Size caps on requests, for every route, before anything parses them.

Headers over MAX_REQUEST_HEADER_BYTES in total: 431. A declared Content-Length over
MAX_REQUEST_BODY_BYTES is refused at once; a chunked body is counted as it streams and
cut off when it passes the cap: 413. All as problem+json.
"""

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import problem_response


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    def _body_detail(self) -> str:
        return f"Request bodies are limited to {self.max_body_bytes} bytes."

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
        declared = dict(headers).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await problem_response(413, "body_too_large", self._body_detail())(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # an HTTPException, so FastAPI's body parsing passes it through as is
                    raise HTTPException(413, self._body_detail())
            return message

        await self.app(scope, counted_receive, send)
