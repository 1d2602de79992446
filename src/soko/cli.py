"""The one command: ``soko serve | fsck | gc | account | audit | usage | lifecycle | jobs | migrate | vulndb |
scan``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime

from soko.config import Settings, load_settings, parse_duration, parse_size
from soko.progress import human_bytes, rate


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (env SOKO_CONFIG)")
    parser.add_argument("--data-dir", help="where metadata and blobs live (env SOKO_DATA_DIR; default ./soko-data)")
    parser.add_argument("--database-url", help="SQLAlchemy URL; default SQLite in the data dir (env SOKO_DATABASE_URL)")


def _settings(args: argparse.Namespace, **extra) -> Settings:
    return load_settings(args.config, {"data_dir": args.data_dir, "database_url": args.database_url, **extra})


def cmd_serve(args: argparse.Namespace) -> int:
    from soko.server import serve

    settings = _settings(
        args,
        listen=args.listen,
        workers=args.workers,
        endpoints=args.endpoints,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        data_listen=args.data_listen,
    )
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return serve(settings)


def cmd_fsck(args: argparse.Namespace) -> int:
    from soko.iam.service import Identity
    from soko.kms.service import KeyService
    from soko.registry import Registry
    from soko.registry.fsck import Progress, check

    registry = Registry.open(_settings(args))
    registry.encryption.attach(KeyService(registry.ctx, Identity(registry.ctx)))  # to re-hash KMS repositories' copies
    progress = Progress()

    def render(elapsed: float) -> str:
        return (
            f"fsck: {progress.phase}: {progress.blobs_checked:,}/{progress.blobs_total:,} blobs, "
            f"{human_bytes(progress.bytes_checked)}/{human_bytes(progress.bytes_total)} "
            f"({rate(progress.bytes_checked, elapsed, 'bytes')}), {elapsed:.0f} s"
        )

    problems = 0
    try:
        with _progress(args, render):
            for problem in check(
                registry.ctx, rehash=not args.quick, progress=progress, encryption=registry.encryption
            ):
                problems += 1
                print(problem, flush=True)
    finally:
        registry.close()
    if progress.keys_unusable:
        print(
            f"fsck: {progress.keys_unusable:,} blob(s) under KMS keys that are disabled or pending deletion were not "
            "re-hashed (enable the keys to check them)"
        )
    if progress.tombstones:
        print(f"fsck: {progress.tombstones:,} stored object(s) of deleted blobs await deletion (the next gc run)")
    if problems:
        print(f"fsck: {problems} problem(s) found; each says what to do, then run `soko fsck` again")
    else:
        print("fsck: no problems found")
    return 1 if problems else 0


def _progress(args: argparse.Namespace, render) -> contextlib.AbstractContextManager:
    """A progress line on stderr on a terminal or with --progress; otherwise nothing."""
    from soko.progress import ProgressLine, wanted

    return ProgressLine(render) if wanted(args.progress) else contextlib.nullcontext()


def _open_identity(args: argparse.Namespace):
    from soko.iam.service import Identity
    from soko.registry import Registry

    registry = Registry.open(_settings(args))
    return registry, Identity(registry.ctx)


def cmd_account_create(args: argparse.Namespace) -> int:
    registry, identity = _open_identity(args)
    try:
        key_id, secret = identity.credentials.create_account(args.account_id)
    finally:
        registry.close()
    print(json.dumps({"AccountId": args.account_id, "AccessKeyId": key_id, "SecretAccessKey": secret}))
    print(_account_dns_hint(registry.settings, args.account_id), file=sys.stderr)  # stdout stays one JSON document
    return 0


def _account_dns_hint(settings: Settings, account_id: str) -> str:
    """What to add so that other accounts (and ECR's repositoryUri) reach this account's registry by name."""
    address, _, port = settings.listen.rpartition(":")
    address = address.strip("[]")
    if address in ("", "0.0.0.0", "::"):
        address = "<this server's address>"
    name = f"{account_id}.dkr.ecr.{settings.region}.{settings.domain}"
    return (
        f"soko: account {account_id} is ready. Its own principals push and pull through the registry's address as it"
        f" is ({settings.listen}): that host serves the caller's own account.\n"
        f"Other accounts reach it (given a repository policy) as {name}:{port}, the form of its repositoryUri;"
        " make that name resolve to this server with one of:\n"
        f"  /etc/hosts line:   {address} {name}\n"
        f"  DNS wildcard:      *.dkr.ecr.{settings.region}.{settings.domain}  A  {address}"
    )


def cmd_account_quota(args: argparse.Namespace) -> int:
    from soko.registry import Registry
    from soko.registry.quotas import QUOTAS

    registry = Registry.open(_settings(args))
    quotas = registry.repositories.quotas
    try:
        if args.name:
            value = None if args.value in (None, "default") else parse_size(args.value)
            quotas.set(args.account_id, args.name, value)
        for name, current in quotas.all(args.account_id).items():
            marker = "" if current == quotas.default(name) else " (account override)"
            print(f"{name:<20} {current:>16}  {QUOTAS[name][1]}{marker}")
    except KeyError as exc:
        print(f"soko account quota: {exc.args[0]}", file=sys.stderr)
        return 2
    finally:
        registry.close()
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from soko.audit import AuditQuery

    since = None
    if args.since:  # (before the registry opens: a bad --since leaves nothing open)
        since = time.time() - parse_duration(args.since) if args.since[-1:].isalpha() else _iso(args.since)
    registry, identity = _open_identity(args)
    try:
        rows = identity.audit.query(
            AuditQuery(since=since, principal=args.principal, decision=args.decision, limit=args.limit)
        )
    finally:
        registry.close()
    for row in reversed(rows):
        if args.format == "json":
            print(json.dumps(row))
            continue
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["at"]))
        count = f" x{row['count']}" if row["count"] > 1 else ""
        print(
            f"{when} {row['event']:<6} {row['decision']:<9}{count} {row['principal'] or '-'} "
            f"{row['action'] or '-'} {row['resource'] or '-'} from {row['source_ip']} via {row['endpoint']} "
            f"[{row['request_id']}] {row['reason'] or ''}"
        )
    return 0


def _iso(text: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        hint = "use a duration (15m, 24h, 7d) or a time (2026-11-28T09:00Z)"
        raise ValueError(f"invalid --since {text!r}: {hint}") from None


def cmd_encrypt_existing(args: argparse.Namespace) -> int:
    from soko.iam.service import Identity
    from soko.kms.service import KeyService
    from soko.registry import Registry
    from soko.registry.encrypt_existing import SealReport, encrypt_existing

    registry = Registry.open(_settings(args))
    registry.encryption.attach(KeyService(registry.ctx, Identity(registry.ctx)))  # KMS repositories' manifests
    report = SealReport()

    def render(elapsed: float) -> str:
        done = report.sealed + report.blobs_rekeyed
        return f"encrypt-existing: sealed {done:,} blob(s), {human_bytes(report.bytes)}, {elapsed:.0f} s"

    try:
        with _progress(args, render):
            encrypt_existing(registry.ctx, dry_run=args.dry_run, report=report, encryption=registry.encryption)
    finally:
        registry.close()
    if args.dry_run:
        print(
            f"encrypt-existing: {report.remaining:,} blob(s) stored in plaintext or under the deployment key and "
            f"{report.manifests:,} manifest(s) stored in plaintext would be sealed; {report.rekeyed:,} manifest(s) of "
            "KMS repositories would move under their key"
        )
    else:
        print(
            f"encrypt-existing: sealed {report.sealed:,} plaintext blob(s) and moved {report.blobs_rekeyed:,} from the "
            f"deployment key to account keys ({human_bytes(report.bytes)}), sealed {report.manifests:,} manifest(s), "
            f"moved {report.rekeyed:,} manifest(s) of KMS repositories under their key ({report.keys_unusable:,} "
            "left: key not usable now); "
            f"{report.already:,} already sealed, {report.missing:,} missing, {report.corrupt:,} not matching their "
            "digest (see soko fsck)"
        )
    return 1 if report.corrupt else 0


def cmd_account_key(args: argparse.Namespace) -> int:
    from soko.registry import Registry

    if not re.fullmatch(r"\d{12}", args.account):
        print(f"account-key: --account must be a 12-digit account id, not {args.account[:40]!r}")
        return 2
    registry = Registry.open(_settings(args))
    try:
        keys = registry.repositories.account_keys
        if args.action == "rotate":
            print(f"account-key: account {args.account} wraps new objects with its new key {keys.rotate(args.account)}")
        elif not args.yes:
            print("account-key shred: add --yes: the content only this account holds becomes unreadable forever")
            return 2
        else:
            gone = keys.shred(args.account)
            print(f"account-key: deleted {gone} key(s) of account {args.account} (crypto-shredded)")
    finally:
        registry.close()
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from soko.registry import Registry

    registry = Registry.open(_settings(args))
    from soko.gc.collector import GcReport  # (after soko.registry, which soko.gc needs loaded first)

    grace = parse_duration(args.grace_period) if args.grace_period is not None else None
    report = GcReport(dry_run=args.dry_run)

    def render(elapsed: float) -> str:
        verb = "would delete" if args.dry_run else "deleted"
        return (
            f"gc: {report.phase}: {verb} {report.links_deleted:,} link(s), {report.blobs_deleted:,} blob(s) "
            f"({human_bytes(report.bytes_reclaimed)}, {rate(report.blobs_deleted, elapsed, ' blobs')}), "
            f"{elapsed:.0f} s"
        )

    try:
        with _progress(args, render):
            registry.gc.run(grace_period=grace, dry_run=args.dry_run, report=report)
    finally:
        registry.close()
    if args.verbose:
        for digest in report.deleted_digests:
            print(("would delete " if args.dry_run else "deleted ") + digest)
    print(report.summary())
    return 0


def cmd_account_list(args: argparse.Namespace) -> int:
    registry, identity = _open_identity(args)
    settings = registry.settings
    try:
        accounts = identity.credentials.accounts()
        repo_counts = registry.repositories.counts_by_account()
    finally:
        registry.close()
    listed = [
        {
            "AccountId": account_id,
            "Default": account_id == settings.account_id,
            "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created_at)),
            "Repositories": repo_counts.get(account_id, 0),
            "RootAccessKeyIds": root_keys,
            "RegistryHost": f"{account_id}.dkr.ecr.{settings.region}.{settings.domain}",
        }
        for account_id, created_at, root_keys in accounts
    ]
    if args.format == "json":
        print(json.dumps(listed, indent=2))
        return 0
    print(f"{'ACCOUNT':<14} {'CREATED':<20} {'REPOS':>6}  {'ROOT KEYS':<22} REGISTRY HOST")
    for entry in listed:
        marker = " (default)" if entry["Default"] else ""
        keys = ",".join(entry["RootAccessKeyIds"]) or "-"
        print(
            f"{entry['AccountId']:<14} {entry['CreatedAt']:<20} {entry['Repositories']:>6}  {keys:<22} "
            f"{entry['RegistryHost']}{marker}"
        )
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    from soko.metering.pricing import parse_month
    from soko.metering.report import build_report, render
    from soko.registry import Registry

    year, month = parse_month(args.month, time.time())
    registry = Registry.open(_settings(args))
    try:
        account = None if args.all_accounts else (args.account or registry.settings.account_id)
        report = build_report(registry.metering, year, month, account)
    finally:
        registry.close()
    print(render(report, args.format))
    return 0


def cmd_lifecycle_run(args: argparse.Namespace) -> int:
    from soko.registry import Registry
    from soko.registry.lifecycle_runner import LifecycleRunner

    registry = Registry.open(_settings(args))
    try:
        runs = LifecycleRunner(registry).run(account_id=args.account, repository=args.repository, dry_run=args.dry_run)
    finally:
        registry.close()
    verb = "would expire" if args.dry_run else "expired"
    for run in runs:
        print(
            f"{run.account_id}/{run.repository}: {verb} {len(run.expired)} image(s)"
            + (f", {'would archive' if args.dry_run else 'archived'} {len(run.archived)}" if run.archived else "")
            + (f", skipped {len(run.skipped)}" if run.skipped else "")
            + (f" — {run.error}" if run.error else "")
        )
        for entry in run.expired:
            tags = ",".join(entry["imageTags"]) or "<untagged>"
            print(f"  {entry['imageDigest']} {tags} (rule {entry['rulePriority']})")
        for entry in run.archived:  # their content moves to the archive tier in the background (job storage_class)
            tags = ",".join(entry["imageTags"]) or "<untagged>"
            print(f"  archived {entry['imageDigest']} {tags} (rule {entry['rulePriority']})")
        for skipped in run.skipped:
            print(f"  skipped {skipped}")
    if not runs:
        print("lifecycle: no repository has a lifecycle policy")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from soko.jobs import job_table
    from soko.registry import Registry

    registry = Registry.open(_settings(args))
    try:
        rows = job_table(registry.ctx)
        now = registry.ctx.clock()
    finally:
        registry.close()
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'KIND':<14} {'KEY':<12} {'NEXT RUN':<20} {'OWNER (LEASE LEFT)':<40} {'RUNS':>6} {'FAILS':>6} LAST ERROR")
    for row in rows:
        next_run = datetime.fromtimestamp(row["next_run"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        lease = row["lease_until"]
        owner = f"{row['owner']} ({lease - now:.0f}s)" if row["owner"] and lease and lease > now else "-"
        error = row["last_error"].splitlines()[0][:60] if row["last_error"] else ""
        print(
            f"{row['kind']:<14} {row['key'] or '-':<12} {next_run:<20} {owner:<40} {row['runs']:>6} "
            f"{row['failures']:>6} {error}"
        )
    if not rows:
        print("jobs: none yet (a serving process schedules them when it starts)")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from soko.meta import Database

    settings = _settings(args)
    db = Database(settings.effective_database_url)
    try:
        db.migrate()
    finally:
        db.dispose()  # (its pooled connections: the engine is left to the garbage collector otherwise)
    print("migrate: schema is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="soko", description="Soko: a private container registry that behaves like ECR"
    )
    parser.add_argument("--version", action="version", version=f"soko {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the registry")
    _common(serve)
    serve.add_argument("--listen", help="HOST:PORT (env SOKO_LISTEN; default 127.0.0.1:5000)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port (env SOKO_WORKERS; default 1)")
    serve.add_argument(
        "--endpoint",
        action="append",
        dest="endpoints",
        metavar="VPCE=HOST:PORT",
        help="open a private-endpoint listener, e.g. vpce-0abc1234=127.0.0.2:5000 (repeatable)",
    )
    serve.add_argument("--tls-cert", help="PEM certificate (chain) to serve HTTPS with (env SOKO_TLS_CERT)")
    serve.add_argument("--tls-key", help="its unencrypted PEM private key, mode 0600 or 0640 (env SOKO_TLS_KEY)")
    serve.add_argument(
        "--data-listen",
        metavar="HOST:PORT",
        help="also serve layer downloads with sendfile on this plain-HTTP port; /v2/ redirects large cached blobs "
        "there (env SOKO_DATA_LISTEN; clients must reach it; see the README)",
    )
    serve.set_defaults(func=cmd_serve)

    fsck = sub.add_parser("fsck", help="re-hash stored blobs and check every manifest's references")
    _common(fsck)
    fsck.add_argument("--quick", action="store_true", help="check sizes only, do not re-hash")
    fsck.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a terminal")
    fsck.set_defaults(func=cmd_fsck)

    account = sub.add_parser("account", help="manage accounts")
    account_sub = account.add_subparsers(dest="account_command", required=True)
    account_create = account_sub.add_parser("create", help="create an account and print its root access key (JSON)")
    _common(account_create)
    account_create.add_argument("account_id", help="12-digit account id")
    account_create.set_defaults(func=cmd_account_create)
    account_list = account_sub.add_parser("list", help="list the accounts: id, repositories, root key ids, host name")
    _common(account_list)
    account_list.add_argument("--format", choices=["table", "json"], default="table")
    account_list.set_defaults(func=cmd_account_list)
    account_quota = account_sub.add_parser(
        "quota", help="show an account's quotas, or set one: soko account quota 111122223333 max_repositories 500"
    )
    _common(account_quota)
    account_quota.add_argument("account_id", help="12-digit account id")
    account_quota.add_argument("name", nargs="?", help="max_repositories | max_image_size | max_tags_per_image")
    account_quota.add_argument("value", nargs="?", help="a number (sizes may say 20GB), or 'default'")
    account_quota.set_defaults(func=cmd_account_quota)

    audit = sub.add_parser("audit", help="show authentication and authorization decisions")
    _common(audit)
    audit.add_argument("--since", help="a duration back from now (15m, 24h, 7d) or an ISO 8601 time")
    audit.add_argument("--principal", help="only this principal ARN")
    audit.add_argument(
        "--decision",
        choices=["allow", "deny", "challenge"],
        help="only allows, denials, or challenges (the anonymous first request of a registry client, answered 401 "
        "with a login challenge: not shown otherwise)",
    )
    audit.add_argument("--limit", type=int, default=1000)
    audit.add_argument("--format", choices=["text", "json"], default="text")
    audit.set_defaults(func=cmd_audit)

    gc = sub.add_parser("gc", help="reclaim unreferenced blobs and abandoned uploads (safe while serving)")
    _common(gc)
    gc.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    gc.add_argument("--grace-period", help="how long unreferenced content is kept (default: gc_grace_period, 24h)")
    gc.add_argument("-v", "--verbose", action="store_true", help="list each blob")
    gc.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a terminal")
    gc.set_defaults(func=cmd_gc)

    seal = sub.add_parser(
        "encrypt-existing", help="seal blobs stored in plaintext by versions before encryption at rest (online)"
    )
    _common(seal)
    seal.add_argument("--dry-run", action="store_true", help="count the plaintext blobs, change nothing")
    seal.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a terminal")
    seal.set_defaults(func=cmd_encrypt_existing)

    account_key = sub.add_parser(
        "account-key", help="an account's service key (AES256): rotate it, or shred it (its content becomes unreadable)"
    )
    _common(account_key)
    account_key.add_argument("action", choices=["rotate", "shred"])
    account_key.add_argument("--account", required=True, help="the 12-digit account id")
    account_key.add_argument("--yes", action="store_true", help="confirm a shred")
    account_key.set_defaults(func=cmd_account_key)

    usage = sub.add_parser("usage", help="cost report: stored bytes, GB-months, transfer and requests for a month")
    _common(usage)
    accounts = usage.add_mutually_exclusive_group()
    accounts.add_argument("--account", help="account id (default: the configured account_id)")
    accounts.add_argument("--all-accounts", action="store_true", help="every account with usage")
    usage.add_argument("--month", help="YYYY-MM (default: the current month, UTC)")
    usage.add_argument("--format", choices=["table", "json", "csv"], default="table")
    usage.set_defaults(func=cmd_usage)

    lifecycle = sub.add_parser("lifecycle", help="apply lifecycle policies")
    lifecycle_sub = lifecycle.add_subparsers(dest="lifecycle_command", required=True)
    lifecycle_run = lifecycle_sub.add_parser("run", help="evaluate lifecycle policies now and expire what they select")
    _common(lifecycle_run)
    lifecycle_run.add_argument("--repository", help="only this repository")
    lifecycle_run.add_argument("--account", help="only this account")
    lifecycle_run.add_argument("--dry-run", action="store_true", help="show what would expire, change nothing")
    lifecycle_run.set_defaults(func=cmd_lifecycle_run)

    jobs = sub.add_parser("jobs", help="show the leased background jobs: next run, owner, runs, failures")
    _common(jobs)
    jobs.add_argument("--format", choices=["text", "json"], default="text")
    jobs.set_defaults(func=cmd_jobs)

    migrate = sub.add_parser("migrate", help="create or upgrade the metadata schema")
    _common(migrate)
    migrate.set_defaults(func=cmd_migrate)

    from soko.scan.cli import add_parsers as add_scan_parsers

    add_scan_parsers(sub, _common, _settings)  # vulndb import|status, scan
    from soko.replication.cli import add_parsers as add_replication_parsers

    add_replication_parsers(sub, _common, _settings)  # replication backfill
    from soko.events.cli import add_parsers as add_events_parsers

    add_events_parsers(sub, _common, _settings)  # events add|update|remove|targets|dead-letters|redeliver|tail
    from soko.signing.cli import add_parsers as add_signing_parsers

    add_signing_parsers(sub, _common, _settings)  # signing trust-store|certificates|rotate

    args = parser.parse_args(argv)
    import sqlalchemy.exc

    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`soko audit | head`): stop quietly, as any Unix filter does, and keep the
        # interpreter's final flush of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a filter cut off this way
    except sqlalchemy.exc.OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0][:300]
        print(
            f"soko {args.command}: cannot use the database ({reason}); check --database-url / SOKO_DATABASE_URL "
            "(or --data-dir for the embedded SQLite) and that the database server is up",
            file=sys.stderr,
        )
        return 2
    except (ValueError, OSError) as exc:
        print(f"soko {args.command}: {exc}", file=sys.stderr)
        return 2


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("soko")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed: run scripts/bootstrap.sh)"
