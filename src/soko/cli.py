"""The one command: ``soko serve | fsck | migrate`` (more subcommands arrive with their features)."""

from __future__ import annotations

import argparse
import logging
import sys

from soko.config import Settings, load_settings


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (env SOKO_CONFIG)")
    parser.add_argument("--data-dir", help="where metadata and blobs live (env SOKO_DATA_DIR; default ./soko-data)")
    parser.add_argument("--database-url", help="SQLAlchemy URL; default SQLite in the data dir (env SOKO_DATABASE_URL)")


def _settings(args: argparse.Namespace, **extra) -> Settings:
    return load_settings(args.config, {"data_dir": args.data_dir, "database_url": args.database_url, **extra})


def cmd_serve(args: argparse.Namespace) -> int:
    from soko.http.server import serve

    settings = _settings(args, listen=args.listen, workers=args.workers)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return serve(settings)


def cmd_fsck(args: argparse.Namespace) -> int:
    from soko.registry import Registry
    from soko.registry.fsck import check

    registry = Registry.open(_settings(args))
    problems = 0
    for problem in check(registry.ctx, rehash=not args.quick):
        problems += 1
        print(problem)
    registry.close()
    print(f"fsck: {problems} problem(s) found" if problems else "fsck: no problems found")
    return 1 if problems else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from soko.meta import Database

    settings = _settings(args)
    Database(settings.effective_database_url).migrate()
    print("migrate: schema is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="soko", description="Soko: a private container registry that behaves like ECR"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the registry")
    _common(serve)
    serve.add_argument("--listen", help="HOST:PORT (env SOKO_LISTEN; default 127.0.0.1:5000)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port (env SOKO_WORKERS; default 1)")
    serve.set_defaults(func=cmd_serve)

    fsck = sub.add_parser("fsck", help="re-hash stored blobs and check every manifest's references")
    _common(fsck)
    fsck.add_argument("--quick", action="store_true", help="check sizes only, do not re-hash")
    fsck.set_defaults(func=cmd_fsck)

    migrate = sub.add_parser("migrate", help="create or upgrade the metadata schema")
    _common(migrate)
    migrate.set_defaults(func=cmd_migrate)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        print(f"soko {args.command}: {exc}", file=sys.stderr)
        return 2
