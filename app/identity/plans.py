"""Plans: the limits a user has, by the plan their token names (JWT_PLAN_CLAIM), with
DEFAULT_PLAN for a token that names none or one not in PLANS. A plan change in the token
takes effect on the next request: nothing about plans is stored."""

import logging
from dataclasses import dataclass

from app.config import Plan, Settings, UploadKind
from app.kit.errors import FieldError, ProblemError
from app.ops.metrics import UNKNOWN_PLANS

logger = logging.getLogger(__name__)
MAX_WARNED = 100  # plan names warned about once each, per process


@dataclass(frozen=True, slots=True)
class PlanLimits:
    name: str
    rate_limit_create: str
    rate_limit_read: str
    max_jobs_in_flight: int
    daily_credit_budget: int
    models: tuple[str, ...]
    resolutions: tuple[str, ...]
    queue_weight: int = 1
    rate_limit_upload: str = "30/minute"
    uploads_per_day: int = 200
    upload_max_bytes: tuple[tuple[UploadKind, int], ...] = ()
    monthly_credits: int = 0  # with the credits ledger: granted each month, expiring at its end

    def upload_cap(self, kind: UploadKind | None) -> int:
        """The largest upload of `kind` this plan takes (None: of any kind)."""
        caps = dict(self.upload_max_bytes)
        return caps[kind] if kind is not None else max(caps.values())

    def check(
        self, model: str, resolution: str, *, model_field: str, resolution_field: str
    ) -> None:
        """403 problem if the plan does not include this model or resolution."""
        for value, allowed, field, what in (
            (model, self.models, model_field, "model"),
            (resolution, self.resolutions, resolution_field, "resolution"),
        ):
            if value not in allowed:
                message = f"the {self.name} plan includes {', '.join(allowed)}"
                raise ProblemError(
                    403,
                    f"plan_forbids_{what}",
                    f"The {self.name} plan does not include the {what} {value}.",
                    errors=[FieldError(field=field, code=f"plan_forbids_{what}", message=message)],
                )


class Plans:
    def __init__(self, settings: Settings) -> None:
        resolutions = sorted({r for rates in settings.cost_per_second.values() for r in rates})

        def limits(name: str, plan: Plan) -> PlanLimits:
            return PlanLimits(
                name=name,
                rate_limit_create=plan.rate_limit_create or settings.rate_limit_create,
                rate_limit_read=plan.rate_limit_read or settings.rate_limit_read,
                max_jobs_in_flight=plan.max_jobs_in_flight or settings.user_max_jobs_in_flight,
                daily_credit_budget=(
                    plan.daily_credit_budget
                    if plan.daily_credit_budget is not None
                    else settings.user_daily_credit_budget
                ),
                models=tuple(plan.models or sorted(settings.cost_per_second)),
                resolutions=tuple(plan.resolutions or resolutions),
                queue_weight=plan.queue_weight,
                rate_limit_upload=plan.rate_limit_upload or settings.rate_limit_upload,
                uploads_per_day=(
                    plan.uploads_per_day
                    if plan.uploads_per_day is not None
                    else settings.uploads_per_day
                ),
                upload_max_bytes=tuple(
                    {**settings.upload_max_bytes, **(plan.upload_max_bytes or {})}.items()
                ),
                monthly_credits=plan.monthly_credits,
            )

        self._plans = {name: limits(name, plan) for name, plan in settings.plans.items()}
        self._warned: set[str] = set()
        self.default = self._plans.get(settings.default_plan) or limits(
            settings.default_plan, Plan()
        )

    def in_force(self, name: object) -> PlanLimits:
        """The plan that applies to `name`: it, or DEFAULT_PLAN (for showing it)."""
        return self._plans.get(name, self.default) if isinstance(name, str) else self.default

    def named(self, name: object) -> PlanLimits:
        """The plan a request's token or key names; DEFAULT_PLAN for none, and, said aloud
        (a log line once per name, `seedance_unknown_plans_total`), for a name not in
        PLANS: a plan removed from the settings that keys or tokens still name."""
        plan = self.in_force(name)
        if not isinstance(name, str) or name in self._plans or name == self.default.name:
            return plan  # DEFAULT_PLAN by its own name is known, with PLANS empty too
        UNKNOWN_PLANS.labels(name[:64]).inc()
        if name not in self._warned and len(self._warned) < MAX_WARNED:
            self._warned.add(name)
            logger.warning(
                "plan %r is not in PLANS: %s applies instead", name[:64], self.default.name
            )
        return self.default
