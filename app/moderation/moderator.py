"""The `Moderator`: the configured provider behind a deadline and a circuit breaker, its
judgments turned into decisions by the operator's thresholds, every decision counted.

A provider that is down, slow or unreadable raises `ModerationUnavailable`; the caller
applies MODERATION_FAIL_MODE (refuse now, or accept unchecked and judge again later).
After MODERATION_BREAKER_FAILURES failures in a row the breaker skips the provider, so an
outage costs a few deadlines, not one per request.
"""

import asyncio
from collections.abc import Sequence

import httpx

from app.config import ModerationMode, ModerationProvider, Settings
from app.jobs.screening import Piece
from app.kit.breaker import CircuitBreaker
from app.moderation.decisions import Decision, Stage, decide
from app.moderation.providers import Context, Provider, ProviderError
from app.moderation.providers.http import HttpProvider
from app.moderation.providers.openai import OpenAIProvider
from app.moderation.providers.rules import NoProvider, RulesProvider
from app.ops.metrics import MODERATION_BREAKER_OPEN, MODERATION_DECISIONS, MODERATION_UNAVAILABLE


class ModerationUnavailable(Exception):
    """No decision could be had; `retry_after` is when the provider may be asked again."""

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def build_provider(settings: Settings, http: httpx.AsyncClient) -> Provider:
    match settings.moderation_provider:
        case ModerationProvider.OPENAI:
            assert settings.moderation_openai_api_key is not None  # Settings requires it
            return OpenAIProvider(
                http,
                settings.moderation_openai_base_url,
                settings.moderation_openai_model,
                settings.moderation_openai_api_key.get_secret_value(),
            )
        case ModerationProvider.HTTP:
            assert settings.moderation_http_url and settings.moderation_http_secret
            return HttpProvider(
                http,
                settings.moderation_http_url,
                settings.moderation_http_secret.get_secret_value(),
            )
        case ModerationProvider.NONE:
            return NoProvider()
        case ModerationProvider.RULES:
            return RulesProvider(settings.blocked_prompt_patterns)


class Moderator:
    def __init__(self, provider: Provider, settings: Settings) -> None:
        self.provider = provider
        self._settings = settings
        self._breaker = CircuitBreaker(
            f"moderation provider {provider.name}",
            MODERATION_BREAKER_OPEN,
            threshold=settings.moderation_breaker_failures,
            reset_seconds=settings.moderation_breaker_reset_seconds,
        )

    @property
    def enforcing(self) -> bool:
        return self._settings.moderation_mode is ModerationMode.ENFORCE

    async def judge(self, context: Context, pieces: Sequence[Piece]) -> list[Decision]:
        """A decision per piece (none for no pieces); `ModerationUnavailable` otherwise."""
        if not pieces:
            return []
        if not self._breaker.allow():
            MODERATION_UNAVAILABLE.labels(self.provider.name).inc()
            raise ModerationUnavailable(
                "the moderation provider is failing",
                self._settings.moderation_breaker_reset_seconds,
            )
        try:
            async with asyncio.timeout(self._settings.moderation_timeout_seconds):
                judgments = await self.provider.judge(context, pieces)
        except (ProviderError, TimeoutError) as exc:
            self._breaker.failed()
            MODERATION_UNAVAILABLE.labels(self.provider.name).inc()
            raise ModerationUnavailable(
                str(exc) or "the moderation provider timed out", 1.0
            ) from exc
        self._breaker.succeeded()
        thresholds = self._settings.moderation_thresholds
        decisions = [
            decide(piece.field, judgment, self.provider.name, thresholds)
            for piece, judgment in zip(pieces, judgments, strict=True)
        ]
        for decision in decisions:
            _count(context.stage, decision)
        return decisions


def _count(stage: Stage, decision: Decision) -> None:
    outcome = decision.verdict.label
    for category in decision.categories or ("none",):
        MODERATION_DECISIONS.labels(stage.value, decision.provider, category, outcome).inc()
