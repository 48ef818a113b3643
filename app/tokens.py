"""Print a bearer token for local use: `python -m app.tokens dev-user [--admin]`."""

import argparse

from app.auth import issue_token
from app.config import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("subject", help="the user id the token speaks for (JWT `sub`)")
    parser.add_argument("--admin", action="store_true", help="add the admin role")
    parser.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    args = parser.parse_args(argv)
    print(issue_token(Settings(), args.subject, admin=args.admin, ttl=args.ttl))


if __name__ == "__main__":
    main()
