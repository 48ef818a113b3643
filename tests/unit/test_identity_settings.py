"""The identity settings refuse what would weaken a check, and claims are found where each
provider puts them."""

import httpx
import pytest

from app.config import Settings, TokenIssuer
from app.identity.claims import claim, has_any
from app.identity.jwks import _max_age
from app.identity.plans import Plans


def test_an_issuer_needs_keys_and_an_audience_rule_or_a_reason() -> None:
    with pytest.raises(ValueError, match="jwks_url"):
        TokenIssuer(issuer="https://idp.example.com", audiences=["api"])
    with pytest.raises(ValueError, match="never skipped silently"):
        TokenIssuer(issuer="https://idp.example.com", discovery=True)
    TokenIssuer(issuer="https://idp.example.com", discovery=True, client_ids=["abc"])
    TokenIssuer(
        issuer="https://idp.example.com",
        discovery=True,
        no_audience_check_because="tokens are minted for this API only",
    )


def test_plans_name_what_exists() -> None:
    def settings(**values: object) -> Settings:
        return Settings(_env_file=None, **values)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="DEFAULT_PLAN"):
        settings(plans={"pro": {}})
    with pytest.raises(ValueError, match="unknown models"):
        settings(plans={"default": {"models": ["seedance-9"]}})
    with pytest.raises(ValueError, match="unknown resolutions"):
        settings(plans={"default": {"resolutions": ["4k"]}})
    with pytest.raises(ValueError):
        settings(plans={"default": {"rate_limit_create": "lots"}})
    settings(plans={"free": {"models": ["seedance-2-mini"]}}, default_plan="free")


def test_claims_where_providers_put_them() -> None:
    claims = {
        "sub": "auth0|42",
        "https://acme.com/roles": ["admin"],
        "realm_access": {"roles": ["user", "admin"]},
        "cognito:groups": ["editors"],
        "role": "authenticated",
    }
    assert claim(claims, "https://acme.com/roles") == ["admin"]
    assert has_any(claim(claims, ["realm_access", "roles"]), ["admin"])
    assert not has_any(claim(claims, "cognito:groups"), ["admin"])
    assert not has_any(claim(claims, "role"), ["admin"])
    assert claim(claims, ["realm_access", "missing", "deeper"]) is None
    assert claim(claims, ["sub", "x"]) is None  # a string has no keys


def test_the_providers_cache_lifetime_is_honoured_within_bounds() -> None:
    def max_age(header: str | None) -> float:
        headers = {"cache-control": header} if header is not None else {}
        return _max_age(httpx.Response(200, headers=headers), default=3600.0)

    assert max_age("public, max-age=600, must-revalidate") == 600
    assert max_age("max-age=5") == 60  # at least a minute: no fetch storm
    assert max_age("max-age=604800") == 86400  # at most a day: rotations are seen
    assert max_age("no-store") == max_age(None) == 3600


def test_the_default_plan_by_its_own_name_is_not_unknown(caplog: pytest.LogCaptureFixture) -> None:
    """Jobs record their plan's name; with PLANS empty it is DEFAULT_PLAN's, which the
    scheduler reads on every claim: it used to be warned about as a plan not in PLANS."""
    plans = Plans(Settings(_env_file=None))  # type: ignore[call-arg]
    assert plans.named("default").name == "default"
    assert plans.named("gold").name == "default"
    assert [r.getMessage() for r in caplog.records] == [
        "plan 'gold' is not in PLANS: default applies instead"
    ]
