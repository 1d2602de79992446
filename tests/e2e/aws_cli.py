"""The real AWS CLI (``.venv/bin/aws``) and the ``soko`` admin CLI, run as subprocesses with nothing from the host.

:class:`AwsCli` holds one access key and talks to one endpoint; no config or credentials file of the machine is
read. :func:`soko_cli` runs ``python -m soko …`` (``account create``, ``audit``) against a data dir, which works
while ``soko serve`` runs on it (same SQLite database).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AWS_TIMEOUT = 120
REGION = "us-east-1"


def aws_binary() -> str:
    """The ``aws`` next to this interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).parent / "aws"
    if local.exists():
        return str(local)
    found = shutil.which("aws")
    if found is None:
        raise FileNotFoundError("aws CLI not found (pip install awscli into the venv)")
    return found


class AwsCliError(RuntimeError):
    def __init__(self, argv: list[str], result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(f"aws failed ({result.returncode}): {' '.join(argv)}\n{result.stderr[-3000:]}")


@dataclass(frozen=True)
class AwsCli:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    home: Path
    session_token: str | None = None
    region: str = REGION
    ca_bundle: Path | None = None  # the CA to trust for an https:// endpoint (AWS_CA_BUNDLE)

    @classmethod
    def for_key(cls, endpoint_url: str, key: dict[str, str], home: Path, ca_bundle: Path | None = None) -> AwsCli:
        """``key`` as ``root-credentials``, ``soko account create`` or ``iam create-access-key`` print it."""
        home.mkdir(parents=True, exist_ok=True)
        return cls(endpoint_url, key["AccessKeyId"], key["SecretAccessKey"], home, key.get("SessionToken"),
                   ca_bundle=ca_bundle)

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        env = {
            **keep,
            "HOME": str(self.home),
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_PAGER": "",
        }
        if self.session_token:
            env["AWS_SESSION_TOKEN"] = self.session_token
        if self.ca_bundle:
            env["AWS_CA_BUNDLE"] = str(self.ca_bundle)
        return env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [aws_binary(), "--endpoint-url", self.endpoint_url, "--output", "json", *args]
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=AWS_TIMEOUT,
                                check=False, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AwsCliError(argv, result)
        return result

    def json(self, *args: str) -> Any:
        out = self.run(*args).stdout
        return json.loads(out) if out.strip() else None

    def login_password(self) -> str:
        """``aws ecr get-login-password``: the password that goes with the user name ``AWS``."""
        return self.run("ecr", "get-login-password").stdout.strip()


def soko_cli(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "soko", *args, "--data-dir", str(data_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOKO_")}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=AWS_TIMEOUT, check=False,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise RuntimeError(f"soko failed ({result.returncode}): {' '.join(argv)}\n{result.stdout}\n{result.stderr}")
    return result


def create_account(data_dir: Path, account_id: str) -> dict[str, str]:
    """``soko account create ID``: the new account's root key (``AccountId``, ``AccessKeyId``, ``SecretAccessKey``)."""
    return dict(json.loads(soko_cli(data_dir, "account", "create", account_id).stdout))


def audit(
    data_dir: Path, *args: str, until: Callable[[list[dict[str, Any]]], bool] | None = None
) -> list[dict[str, Any]]:
    """``soko audit --format json [args]``, oldest first. With ``until``: read again (for up to 10 s) until the rows
    satisfy it — the server writes audit events in batches about once a second, so a request that just finished
    may not be in the database yet."""
    deadline = time.monotonic() + 10
    while True:
        out = soko_cli(data_dir, "audit", "--format", "json", *args).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        if until is None or until(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)
