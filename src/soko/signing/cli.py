"""``soko signing …``: the trust store that verifies the account's signatures, the signing certificates, and key
rotation."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from soko.errors import SokoError


def add_parsers(sub, common: Callable, settings: Callable) -> None:
    signing = sub.add_parser("signing", help="managed signing: trust store, certificates, key rotation")
    signing_sub = signing.add_subparsers(dest="signing_command", required=True)

    def command(name: str, help: str, func: Callable) -> argparse.ArgumentParser:
        parser = signing_sub.add_parser(name, help=help)
        common(parser)
        parser.add_argument("--account", help="the account (default: the configured account)")
        parser.set_defaults(func=lambda args: _run(func, args, settings(args)))
        return parser

    command("trust-store", "print the account's signing root certificate (PEM) for `notation cert add --type ca`",
            cmd_trust_store)
    command("certificates", "list the signing certificates of every profile and key version (JSON lines)",
            cmd_certificates)
    rotate = command("rotate", "give a signing profile a new key: new signatures use it, old ones keep verifying",
                     cmd_rotate)
    rotate.add_argument("profile_arn", metavar="SIGNING_PROFILE_ARN")


def _run(func: Callable, args: argparse.Namespace, settings) -> int:
    from soko.iam.secrets import MasterKey
    from soko.registry import Registry
    from soko.signing.keys import SigningKeys

    registry = Registry.open(settings)
    try:
        keys = SigningKeys(registry.ctx, MasterKey.load(settings.master_key, settings.data_dir))
        return int(func(args, keys, args.account or settings.account_id))
    except SokoError as exc:
        print(f"soko signing {args.signing_command}: {exc.message}", file=sys.stderr)
        return 2
    finally:
        registry.close()


def cmd_trust_store(_args: argparse.Namespace, keys, account: str) -> int:
    sys.stdout.write(keys.trust_store(account))
    return 0


def cmd_certificates(_args: argparse.Namespace, keys, account: str) -> int:
    for profile, version, pem in keys.certificates(account):
        print(json.dumps({"signingProfileArn": profile, "version": version, "certificate": pem}))
    return 0


def cmd_rotate(args: argparse.Namespace, keys, account: str) -> int:
    from soko.signing.config import PROFILE_ARN

    match = PROFILE_ARN.fullmatch(args.profile_arn)
    if match is None or match["account"] != account:
        print(f"soko signing rotate: {args.profile_arn!r} is not a signing profile ARN of account {account}",
              file=sys.stderr)
        return 2
    if not any(profile == args.profile_arn for profile, _, _ in keys.certificates(account)):
        print(f"soko signing rotate: no key for {args.profile_arn} (put a signing configuration naming it first)",
              file=sys.stderr)
        return 2
    print(json.dumps({"signingProfileArn": args.profile_arn, "version": keys.rotate(account, args.profile_arn)}))
    return 0
