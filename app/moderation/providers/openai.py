"""OpenAI's moderation endpoint (`POST {base}/moderations`, `omni-moderation-latest`).

Texts go in one request as a list of strings (one result each), the texts of concurrent
creates together (`Coalescer`: up to TEXTS_PER_REQUEST, REQUESTS_IN_FLIGHT at once). The
endpoint takes at most one image per request ("Number of images (2) exceeds maximum of 1"),
so each image is a request of its own, all at once. It scores images only for some
categories (sexual, violence, self-harm and their subcategories); the others read text
alone.
"""

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

import httpx

from app.jobs.screening import Piece
from app.kit.coalescing import Coalescer
from app.moderation.decisions import Judgment
from app.moderation.providers import Context, ProviderError

TEXTS_PER_REQUEST = 32
REQUESTS_IN_FLIGHT = 4


class OpenAIProvider:
    name = "openai"

    def __init__(self, http: httpx.AsyncClient, base_url: str, model: str, api_key: str) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/moderations"
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._texts: Coalescer[str, Judgment] = Coalescer(
            self._moderate, max_items=TEXTS_PER_REQUEST, max_in_flight=REQUESTS_IN_FLIGHT
        )

    async def judge(self, context: Context, pieces: Sequence[Piece]) -> list[Judgment]:
        texts = [p for p in pieces if p.text is not None]
        images = [p for p in pieces if p.image_url is not None]
        requests: list[Awaitable[list[Judgment]]] = [
            self._moderate([{"type": "image_url", "image_url": {"url": p.image_url}}])
            for p in images
        ]
        if texts:
            requests.insert(0, self._texts.submit([p.text for p in texts if p.text is not None]))
        try:
            answers = await asyncio.gather(*requests)
        except ValueError as exc:  # a batch the answer does not match (`Coalescer`)
            raise ProviderError("the moderation answer does not match the request") from exc
        text_results = answers.pop(0) if texts else []
        if any(len(a) != 1 for a in answers):
            raise ProviderError("the moderation answer does not match the request")
        judged = dict(zip((id(p) for p in texts), text_results, strict=True))
        judged |= {id(p): a[0] for p, a in zip(images, answers, strict=True)}
        return [judged.get(id(p), Judgment(False)) for p in pieces]

    async def _moderate(self, model_input: Any) -> list[Judgment]:
        try:
            response = await self._http.post(
                self._url, json={"model": self._model, "input": model_input}, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise ProviderError(f"{type(exc).__name__} from the moderation API") from exc
        if not response.is_success:
            raise ProviderError(f"HTTP {response.status_code} from the moderation API")
        try:
            return [_judgment(result) for result in response.json()["results"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError("an unreadable answer from the moderation API") from exc


def _judgment(result: dict[str, Any]) -> Judgment:
    scores = result["category_scores"]
    if not isinstance(scores, dict):
        raise TypeError("category_scores")
    return Judgment(
        flagged=bool(result["flagged"]),
        scores={str(name): float(score) for name, score in scores.items()},
    )
