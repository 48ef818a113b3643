"""The product's own moderation service: one JSON POST per job, `{stage, job_id, owner,
text, image_urls}`, signed as our outbound webhooks are (Standard Webhooks headers under
MODERATION_HTTP_SECRET), answered `{decision, categories, reason}`. Its decision covers
every piece it was sent together."""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from standardwebhooks import Webhook

from app.jobs.screening import Piece
from app.moderation.decisions import Judgment, Verdict
from app.moderation.providers import Context, ProviderError

_VERDICTS = {v.label: v for v in Verdict}


class HttpProvider:
    name = "http"

    def __init__(self, http: httpx.AsyncClient, url: str, secret: str) -> None:
        self._http = http
        self._url = url
        self._signer = Webhook(secret)

    async def judge(self, context: Context, pieces: Sequence[Piece]) -> list[Judgment]:
        texts = [p.text for p in pieces if p.text is not None]
        body = orjson.dumps(
            {
                "stage": context.stage.value,
                "job_id": context.job_id,
                "owner": context.owner,
                "text": "\n\n".join(texts) if texts else None,
                "image_urls": [p.image_url for p in pieces if p.image_url is not None],
            }
        )
        message_id, at = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": self._signer.sign(message_id, at, body.decode()),
        }
        try:
            response = await self._http.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ProviderError(f"{type(exc).__name__} from the moderation service") from exc
        if not response.is_success:
            raise ProviderError(f"HTTP {response.status_code} from the moderation service")
        judgment = _judgment(response)
        return [judgment for _ in pieces]


def _judgment(response: httpx.Response) -> Judgment:
    try:
        answer: Any = response.json()
        verdict = _VERDICTS[answer["decision"]]
        categories = answer.get("categories") or {}
        if isinstance(categories, list):
            categories = dict.fromkeys(categories, 1.0)
        scores = {str(k): float(v) for k, v in categories.items()}
        reason = answer.get("reason")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProviderError("an unreadable answer from the moderation service") from exc
    return Judgment(
        verdict is not Verdict.ALLOW,
        scores,
        verdict,
        reason[:64] if isinstance(reason, str) else None,
    )
