"""``soko replication backfill``: replicate the images pushed before the rules existed (the serving processes copy
them, as leased jobs); idempotent, so an interrupted backfill is resumed by running it again."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from soko.errors import SokoError


def add_parsers(sub, common: Callable, settings: Callable) -> None:
    replication = sub.add_parser("replication", help="replication of images to other registries")
    replication_sub = replication.add_subparsers(dest="replication_command", required=True)
    backfill = replication_sub.add_parser(
        "backfill",
        help="request the replication of existing images the account's rules name (copied by the serving "
        "processes; images already COMPLETE at a destination are skipped; safe to repeat)",
    )
    common(backfill)
    backfill.add_argument("--repository", help="only this repository")
    backfill.add_argument("--account", help="the source account (default: the configured account)")
    backfill.set_defaults(func=lambda args: cmd_backfill(args, settings(args)))


def cmd_backfill(args: argparse.Namespace, settings) -> int:
    from soko.registry import Registry
    from soko.replication import Replicator

    registry = Registry.open(settings)
    try:
        account = args.account or settings.account_id
        if not registry.replication.get(account):
            print(f"soko replication backfill: account {account} has no replication rules", file=sys.stderr)
            return 1
        try:
            images, requested = Replicator(registry).backfill(account, args.repository)
        except SokoError as exc:
            print(f"soko replication backfill: {exc.message}", file=sys.stderr)
            return 1
    finally:
        registry.close()
    print(f"replication backfill: {images} image(s) looked at, {requested} replication(s) requested")
    return 0
