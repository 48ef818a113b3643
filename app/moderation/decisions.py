"""One decision shape for every provider, and how a provider's scores become a verdict.

A provider answers per piece (a text or an image): whether it flagged it and its scores
by category. `MODERATION_THRESHOLDS` turn scores into verdicts per category; without
them, what the provider flags (or scores 0.5 or more in any category) goes to review,
which at the input stage is a refusal and at the output stage a hold. A provider may
also decide outright (the operator's own patterns, the product's own service).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from app.config import Threshold

DEFAULT_REVIEW_SCORE = 0.5


class Verdict(IntEnum):
    """Ordered: the worst of several is their maximum."""

    ALLOW = 0
    REVIEW = 1
    BLOCK = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class Stage(StrEnum):
    INPUT = "input"  # the prompt and the inputs, before anything is queued
    OUTPUT = "output"  # the stored result, before its owner sees it


@dataclass(frozen=True, slots=True)
class Judgment:
    """What a provider said of one piece."""

    flagged: bool
    scores: Mapping[str, float] = field(default_factory=dict)
    verdict: Verdict | None = None  # a provider that decides itself
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The service's decision on one piece: the verdict, the categories behind it (with
    their scores), the provider and a reason code."""

    field: str
    verdict: Verdict
    categories: dict[str, float]
    provider: str
    reason: str | None = None


def not_allowed(decisions: Iterable[Decision]) -> list[Decision]:
    """The decisions that are not `allow`: a review or a block."""
    return [d for d in decisions if d.verdict is not Verdict.ALLOW]


def worst(decisions: Iterable[Decision]) -> Verdict:
    return max((d.verdict for d in decisions), default=Verdict.ALLOW)


def categories_of(decisions: Iterable[Decision]) -> list[str]:
    """Every category behind `decisions`, once each, sorted."""
    return sorted({category for d in decisions for category in d.categories})


def decide(
    piece_field: str,
    judgment: Judgment,
    provider: str,
    thresholds: Mapping[str, Threshold],
) -> Decision:
    verdict, categories = Verdict.ALLOW, {}
    for category, score in judgment.scores.items():
        threshold = thresholds.get(category)
        if threshold is None and thresholds:
            continue  # set thresholds name the categories that count
        review = threshold.review if threshold is not None else DEFAULT_REVIEW_SCORE
        block = threshold.block if threshold is not None else None
        if block is not None and score >= block:
            verdict, categories[category] = Verdict.BLOCK, score
        elif review is not None and score >= review:
            verdict, categories[category] = max(verdict, Verdict.REVIEW), score
    if judgment.flagged and not thresholds:
        verdict = max(verdict, Verdict.REVIEW)
    if judgment.verdict is not None:
        verdict = judgment.verdict
        if verdict is not Verdict.ALLOW and not categories:
            categories = {c: s for c, s in judgment.scores.items() if s > 0}
    return Decision(piece_field, verdict, categories, provider, judgment.reason)
