"""The `profile-service` command: migrate, serve, purge, token."""

import argparse
import os
import sys


def _migrate(_: argparse.Namespace) -> int:
    from profile_service import migrate

    url = os.environ.get("DATABASE_URL")
    if not url:
        print("DATABASE_URL is required: the schema owner's connection URL", file=sys.stderr)
        return 2
    migrate.upgrade(url)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(prog="profile-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "migrate", help="alembic upgrade head on DATABASE_URL (run as the schema owner)"
    ).set_defaults(handler=_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
