"""A moderation provider over real HTTP, in OpenAI's shape (`POST /v1/moderations`,
`omni-moderation-latest`) and in the `http` provider's (a signed JSON POST answered
`{decision, categories, reason}`): tests and `bench.moderation` point the service at it.

Text is flagged by words (`text_scores`), images by their bytes (`image_scores`, keyed by
sha256): an image URL is fetched as OpenAI would, so a URL the service hands out that does
not work fails the test. Like the real endpoint, more than one image in a request is a 400.
"""

import asyncio
import base64
import hashlib
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from PIL import Image
from standardwebhooks import Webhook

from testkit.harness import serve

CATEGORIES = ("sexual", "violence", "self-harm", "hate", "harassment", "illicit")


@dataclass
class FakeModeration:
    text_scores: dict[str, dict[str, float]] = field(default_factory=dict)  # word -> scores
    image_scores: dict[str, dict[str, float]] = field(default_factory=dict)  # sha256 -> scores
    every_image: dict[str, float] = field(default_factory=dict)  # scores of any image
    down: bool = False  # answer 503
    latency_seconds: float = 0.0
    requests: list[Any] = field(default_factory=list)
    images: list[tuple[int, int]] = field(default_factory=list)  # the size of each judged
    http_secret: str | None = None  # the `http` provider's: requests must verify

    def _scores(self, text: str) -> dict[str, float]:
        scores = dict.fromkeys(CATEGORIES, 0.001)
        for word, flagged in self.text_scores.items():
            if word in text.lower():
                scores |= flagged
        return scores

    async def _image(self, http: httpx.AsyncClient, url: str) -> dict[str, float]:
        """An image by URL (fetched, as OpenAI would) or as a data URL; it must be a JPEG,
        PNG or WebP that Pillow opens."""
        if url.startswith("data:"):
            content = base64.b64decode(url.split(",", 1)[1])
        else:
            fetched = await http.get(url)
            fetched.raise_for_status()
            content = fetched.content
        self.images.append(Image.open(io.BytesIO(content)).size)
        digest = hashlib.sha256(content).hexdigest()
        scores = dict.fromkeys(CATEGORIES, 0.001) | self.every_image
        return scores | self.image_scores.get(digest, {})

    def app(self) -> FastAPI:
        app = FastAPI()
        http = httpx.AsyncClient(timeout=10)

        @app.post("/v1/moderations")
        async def moderations(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            if self.latency_seconds:
                await asyncio.sleep(self.latency_seconds)
            if self.down:
                return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
            model_input = body["input"]
            if isinstance(model_input, str):
                model_input = [model_input]
            if all(isinstance(item, str) for item in model_input):
                return JSONResponse({"results": [_result(self._scores(t)) for t in model_input]})
            images = [i["image_url"]["url"] for i in model_input if i["type"] == "image_url"]
            if len(images) > 1:
                message = f"Number of images ({len(images)}) exceeds maximum of 1"
                return JSONResponse({"error": {"message": message}}, status_code=400)
            scores = dict.fromkeys(CATEGORIES, 0.001)
            for item in model_input:
                if item["type"] == "text":
                    scores |= self._scores(item["text"])
            for url in images:
                scores = {
                    k: max(v, scores.get(k, 0)) for k, v in (await self._image(http, url)).items()
                }
            return JSONResponse({"results": [_result(scores)]})

        @app.post("/moderate")
        async def own_service(request: Request) -> Response:
            raw = await request.body()
            assert self.http_secret is not None
            Webhook(self.http_secret).verify(raw, dict(request.headers))  # raises if unsigned
            body = await request.json()
            self.requests.append(body)
            if self.down:
                return Response(status_code=503)
            scores = self._scores(body["text"] or "")
            flagged = {k: v for k, v in scores.items() if v >= 0.5}
            decision = (
                "block"
                if any(v >= 0.9 for v in flagged.values())
                else "review"
                if flagged
                else "allow"
            )
            return JSONResponse(
                {"decision": decision, "categories": flagged, "reason": "own_rules"}
            )

        return app


def _result(scores: dict[str, float]) -> dict[str, Any]:
    return {
        "flagged": any(score >= 0.5 for score in scores.values()),
        "categories": {name: score >= 0.5 for name, score in scores.items()},
        "category_scores": scores,
    }


@asynccontextmanager
async def fake_moderation(fake: FakeModeration) -> AsyncIterator[str]:
    """Serve `fake`; yields its base URL (`.../v1` for the `openai` provider)."""
    async with serve(fake.app()) as url:
        yield url
