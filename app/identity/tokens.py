"""Tokens for local use: `python -m app.identity.tokens dev-user [--admin]` prints one.
Production tokens come from an identity provider."""

import argparse
import time

import jwt

from app.config import JwtAlgorithm, Settings


def issue_token(
    settings: Settings, subject: str, *, admin: bool = False, ttl: int | None = None
) -> str:
    """Sign an HS256 token for local use (dev CLI, tests); production tokens come from your IdP."""
    if settings.jwt_algorithm is not JwtAlgorithm.HS256:
        raise ValueError("tokens can only be issued locally with the HS256 shared secret")
    now = int(time.time())
    claims = {
        "sub": subject,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + (ttl if ttl is not None else settings.dev_token_ttl_seconds),
    }
    if admin:
        claims["role"] = "admin"
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("subject", help="the user id the token speaks for (JWT `sub`)")
    parser.add_argument("--admin", action="store_true", help="add the admin role")
    parser.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    args = parser.parse_args(argv)
    print(issue_token(Settings(), args.subject, admin=args.admin, ttl=args.ttl))


if __name__ == "__main__":
    main()
