"""A hermetic skopeo runner: temporary auth file, policy, registries.conf and HOME; plain HTTP registries."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SKOPEO_TIMEOUT = 600


class SkopeoError(RuntimeError):
    def __init__(self, argv: list[str], result: SkopeoResult) -> None:
        self.result = result
        super().__init__(
            f"skopeo failed ({result.returncode}): {' '.join(argv)}\n"
            f"--- stderr (tail) ---\n{result.stderr[-4000:]}"
        )


@dataclass(frozen=True)
class SkopeoResult:
    returncode: int
    stdout_bytes: bytes
    stderr: str

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode()


@dataclass
class Skopeo:
    """``skopeo`` with nothing from the host: every registry is plain HTTP, credentials come from ``auths``."""

    home: Path
    auths: dict[str, tuple[str, str]]
    #: extra /etc/hosts lines (name → address) this skopeo alone sees: see :func:`with_hosts`
    hosts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, home: Path, auths: dict[str, tuple[str, str]] | None = None,
               hosts: dict[str, str] | None = None) -> Skopeo:
        home.mkdir(parents=True, exist_ok=True)
        runner = cls(home, dict(auths or {}), dict(hosts or {}))
        (home / "policy.json").write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        (home / "registries.conf").write_text("unqualified-search-registries = []\n")
        (home / "registries.d").mkdir(exist_ok=True)
        (home / "tmp").mkdir(exist_ok=True)
        runner.write_authfile()
        return runner

    @staticmethod
    def available() -> bool:
        return shutil.which("skopeo") is not None

    @property
    def authfile(self) -> Path:
        return self.home / "auth.json"

    def add_registry(self, host: str, credentials: tuple[str, str] | None) -> None:
        if credentials is not None:
            self.auths[host] = credentials
            self.write_authfile()

    def write_authfile(self) -> None:
        auths = {
            host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
            for host, (user, password) in self.auths.items()
        }
        self.authfile.write_text(json.dumps({"auths": auths}))

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        return {
            **keep,
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_RUNTIME_DIR": str(self.home),
            "REGISTRY_AUTH_FILE": str(self.authfile),
            "CONTAINERS_REGISTRIES_CONF": str(self.home / "registries.conf"),
            "TMPDIR": str(self.home / "tmp"),
        }

    def run(self, *args: str, debug: bool = False, check: bool = True,
            timeout: float = SKOPEO_TIMEOUT) -> SkopeoResult:
        argv = ["skopeo", "--policy", str(self.home / "policy.json"),
                "--registries.d", str(self.home / "registries.d")]
        if debug:
            argv.append("--debug")
        argv += list(args)
        if self.hosts:
            argv = with_hosts(self.home / "hosts", self.hosts, argv)
        proc = subprocess.run(argv, capture_output=True, env=self.env(), timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
        result = SkopeoResult(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise SkopeoError(argv, result)
        return result

    def _auth(self) -> list[str]:
        return ["--authfile", str(self.authfile)]

    def copy(self, src: str, dst: str, *extra: str, all_images: bool = False, debug: bool = False,
             check: bool = True) -> SkopeoResult:
        args = ["copy", *self._auth(), "--src-tls-verify=false", "--dest-tls-verify=false"]
        if all_images:
            args.append("--all")
        return self.run(*args, *extra, src, dst, debug=debug, check=check)

    def inspect_raw(self, ref: str) -> bytes:
        result = self.run("inspect", *self._auth(), "--tls-verify=false", "--raw", ref)
        return result.stdout_bytes

    def inspect(self, ref: str, *extra: str, check: bool = True) -> SkopeoResult:
        return self.run("inspect", *self._auth(), "--tls-verify=false", *extra, ref, check=check)

    def list_tags(self, ref: str) -> list[str]:
        result = self.run("list-tags", *self._auth(), "--tls-verify=false", ref)
        return list(json.loads(result.stdout)["Tags"])

    def delete(self, ref: str) -> None:
        self.run("delete", *self._auth(), "--tls-verify=false", ref)


def with_hosts(path: Path, hosts: dict[str, str], argv: list[str]) -> list[str]:
    """``argv`` run in a mount namespace of its own where /etc/hosts also holds ``hosts``: the README's "hosts lines"
    DNS set-up for ``<account>.dkr.ecr.<region>.localhost``, which neither glibc nor Go resolves by itself here,
    without touching the machine's /etc/hosts. Needs ``unshare`` (util-linux) and root or user namespaces."""
    if not can_override_hosts():
        raise RuntimeError("cannot give a process its own /etc/hosts here (unshare --mount failed)")
    lines = Path("/etc/hosts").read_text() + "".join(f"{addr} {name}\n" for name, addr in hosts.items())
    path.write_text(lines)
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return ["unshare", "--mount", *([] if os.geteuid() == 0 else ["--map-root-user"]), "sh", "-c", script,
            str(path), *argv]


_HOSTS_OK: list[bool] = []


def can_override_hosts() -> bool:
    if not _HOSTS_OK:
        probe = ["unshare", "--mount", *([] if os.geteuid() == 0 else ["--map-root-user"]), "sh", "-c",
                 "mount --bind /etc/hosts /etc/hosts"]
        try:
            ok = subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        _HOSTS_OK.append(ok)
    return _HOSTS_OK[0]
