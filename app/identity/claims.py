"""Where a provider puts what we need: the claim that names the user, and the one that
makes an admin (a `role` string, a `roles`/`groups` list, an Auth0 namespaced claim, or
Keycloak's nested `realm_access.roles`)."""

from typing import Any

# a top-level claim name (which may itself contain dots or slashes, as Auth0's namespaced
# claims do), or the list of keys down to a nested one
ClaimPath = str | list[str]


def claim(claims: dict[str, Any], path: ClaimPath) -> Any:
    """The value at `path`, or None."""
    value: Any = claims
    for key in [path] if isinstance(path, str) else path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def has_any(value: Any, wanted: list[str]) -> bool:
    """A string claim equal to one of `wanted`, or a list claim holding one."""
    if isinstance(value, str):
        return value in wanted
    if isinstance(value, list):
        return any(isinstance(v, str) and v in wanted for v in value)
    return False
