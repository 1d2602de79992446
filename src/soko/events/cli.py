"""``soko events …``: webhook targets, delivery status, dead letters, redelivery, and a live tail of the outbox."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime

from soko.errors import SokoError


def add_parsers(sub, common: Callable, settings: Callable) -> None:
    events = sub.add_parser("events", help="registry events: webhook targets, delivery, dead letters, tail")
    events_sub = events.add_subparsers(dest="events_command", required=True)

    def command(name: str, help: str, func: Callable) -> argparse.ArgumentParser:
        parser = events_sub.add_parser(name, help=help)
        common(parser)
        parser.add_argument("--account", help="the account (default: the configured account)")
        parser.set_defaults(func=lambda args: _run(func, args, settings(args)))
        return parser

    add = command("add", "add a webhook target; prints its secret once (JSON)", cmd_add)
    add.add_argument("name")
    add.add_argument("--url", required=True, help="http(s) URL the events are POSTed to")
    add.add_argument("--pattern", help="EventBridge event pattern (JSON) selecting the events; default: all")
    add.add_argument("--secret-file", help="read the HMAC secret from this file (default: generate one)")
    add.add_argument("--max-attempts", type=int, default=10, help="attempts before an event is dead-lettered")
    add.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt")

    update = command("update", "change a webhook target", cmd_update)
    update.add_argument("name")
    update.add_argument("--url")
    update.add_argument("--pattern")
    update.add_argument("--clear-pattern", action="store_true", help="deliver every event of the account")
    update.add_argument("--secret-file")
    update.add_argument("--max-attempts", type=int)
    update.add_argument("--timeout", type=float)
    switch = update.add_mutually_exclusive_group()
    switch.add_argument("--enable", dest="enabled", action="store_const", const=True)
    switch.add_argument("--disable", dest="enabled", action="store_const", const=False)

    remove = command("remove", "remove a webhook target (and its dead letters)", cmd_remove)
    remove.add_argument("name")

    targets = command("targets", "list targets with their delivery status", cmd_targets)
    targets.add_argument("--format", choices=["text", "json"], default="text")

    dead = command("dead-letters", "events targets gave up on", cmd_dead_letters)
    dead.add_argument("--target")
    dead.add_argument("--limit", type=int, default=100)
    dead.add_argument("--format", choices=["text", "json"], default="text")

    redeliver = command("redeliver", "send dead letters (or given events) to a target again", cmd_redeliver)
    redeliver.add_argument("target")
    redeliver.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="default: all its dead letters")

    tail = command("tail", "print events as they are committed (JSON lines); Ctrl-C stops", cmd_tail)
    tail.add_argument("--pattern", help="only events this EventBridge pattern selects")
    tail.add_argument("--last", type=int, default=0, help="start with the last N events")
    tail.add_argument("--after", type=int, help="start after this outbox id (resume where a previous tail stopped)")
    tail.add_argument("--count", type=int, default=0, help="stop after N events (default: follow)")
    tail.add_argument("--all-accounts", action="store_true", help="every account's events")


def _run(func: Callable, args: argparse.Namespace, settings) -> int:
    from soko.registry import Registry

    registry = Registry.open(settings)
    try:
        return int(func(args, registry, args.account or settings.account_id))
    except SokoError as exc:
        print(f"soko events {args.events_command}: {exc.message}", file=sys.stderr)
        return 2
    finally:
        registry.close()


def _targets(registry):
    from soko.events.targets import Targets

    return Targets(registry.ctx)


def _read_secret(path: str | None) -> str | None:
    from soko.events.targets import MAX_SECRET

    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(4 * MAX_SECRET + 1)  # enough to tell a secret from something else; never all of /dev/zero
        return data.decode().strip()
    except OSError as exc:
        raise SokoError(f"cannot read the secret file {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SokoError(f"the secret file {path!r} is not UTF-8 text") from None


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def cmd_add(args, registry, account: str) -> int:
    secret = _targets(registry).create(
        account,
        args.name,
        args.url,
        secret=_read_secret(args.secret_file),
        pattern=args.pattern,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
    )
    shown = {"Target": args.name, "Account": account, "Url": args.url}
    if args.secret_file is None:
        shown["Secret"] = secret  # generated: shown this once
    print(json.dumps(shown))
    return 0


def cmd_update(args, registry, account: str) -> int:
    _targets(registry).update(
        account,
        args.name,
        url=args.url,
        pattern=args.pattern,
        clear_pattern=args.clear_pattern,
        enabled=args.enabled,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        secret=_read_secret(args.secret_file),
    )
    return 0


def cmd_remove(args, registry, account: str) -> int:
    _targets(registry).delete(account, args.name)
    return 0


def cmd_targets(args, registry, account: str) -> int:
    rows = _targets(registry).status(account)
    if args.format == "json":
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    print(
        f"{'TARGET':<20} {'ON':<3} {'DELIVERED':>9} {'FAILS':>6} {'DEAD':>5} {'BACKLOG':>7} {'RETRY AT':<20} "
        "URL / LAST ERROR"
    )
    for r in rows:
        retry = _when(r.next_attempt_at) if r.attempts else "-"
        print(
            f"{r.name:<20} {'yes' if r.enabled else 'no':<3} {r.delivered:>9} {r.failures:>6} {r.dead:>5} "
            f"{r.backlog:>7} {retry:<20} {r.url}" + (f"  ({r.last_error})" if r.attempts and r.last_error else "")
        )
    return 0


def cmd_dead_letters(args, registry, account: str) -> int:
    rows = _targets(registry).dead_letters(account, args.target, args.limit)
    if args.format == "json":
        print(json.dumps([r | {"body": json.loads(r["body"])} for r in rows], indent=2))
        return 0
    print(f"{'TARGET':<20} {'EVENT ID':<36} {'STATUS':<6} {'TRIES':>5} {'DEAD AT':<20} LAST ERROR")
    for r in rows:
        print(
            f"{r['target']:<20} {r['event_id']:<36} {r['status']:<6} {r['attempts']:>5} {_when(r['dead_at']):<20} "
            f"{r['last_error'] or ''}"
        )
    return 0


def cmd_redeliver(args, registry, account: str) -> int:
    count = _targets(registry).redeliver(account, args.target, args.event_ids or None)
    print(f"{count} event(s) queued for redelivery to {args.target}")
    return 0


def cmd_tail(args, registry, account: str) -> int:
    from soko.events import patterns
    from soko.events.stream import EventStream, InvalidPosition

    if args.count < 0:
        raise InvalidPosition("--count is 0 (follow) or more")
    pattern = patterns.parse(args.pattern) if args.pattern else None
    stream = EventStream(registry.ctx)
    scope = None if args.all_accounts else account
    printed = 0
    try:
        for event in stream.follow(scope, stream.start(scope, last=args.last, after=args.after), pattern=pattern):
            print(event.body, flush=True)
            printed += 1
            if args.count and printed >= args.count:
                break
    except KeyboardInterrupt:
        pass
    return 0
