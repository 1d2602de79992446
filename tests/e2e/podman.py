"""podman and buildah with nothing from the host: each :class:`ContainerTool` has its own image store (vfs, no
kernel overlay needed), run dir, registries.conf, signature policy and auth file in a temporary directory.

Both run rootful here (the tests run as root). Logins go through the tools' own ``login --password-stdin``, as a
user types it after ``aws ecr get-login-password``.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

TOOL_TIMEOUT = 120


class ToolError(RuntimeError):
    pass


@dataclass(frozen=True)
class ContainerTool:
    binary: str  # "podman" or "buildah"
    home: Path
    runroot: Path  # podman refuses a run root longer than 50 characters: pytest's tmp_path is too long

    @classmethod
    def create(cls, binary: str, home: Path, runroot: Path) -> ContainerTool:
        for path in (home / "root", home / "tmp", home / "run", home / "libpod-tmp", runroot):
            path.mkdir(parents=True, exist_ok=True)
        (home / "registries.conf").write_text("unqualified-search-registries = []\n")
        (home / "policy.json").write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        (home / "auth.json").write_text('{"auths": {}}')
        return cls(binary, home, runroot)

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        return {
            **keep,
            "HOME": str(self.home),
            "TMPDIR": str(self.home / "tmp"),
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "CONTAINERS_REGISTRIES_CONF": str(self.home / "registries.conf"),
            "REGISTRY_AUTH_FILE": str(self.home / "auth.json"),
        }

    def global_args(self) -> list[str]:
        args = ["--root", str(self.home / "root"), "--runroot", str(self.runroot),
                "--storage-driver", "vfs"]
        if self.binary == "podman":
            args += ["--tmpdir", str(self.home / "libpod-tmp"), "--events-backend", "none",
                     "--cgroup-manager", "cgroupfs"]
        return args

    def run(self, *args: str, stdin: str | None = None) -> str:
        argv = [self.binary, *self.global_args(), *args]
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=TOOL_TIMEOUT,
                                check=False, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)
        if result.returncode != 0:
            raise ToolError(f"{self.binary} failed ({result.returncode}): {' '.join(argv)}\n{result.stderr[-3000:]}")
        return result.stdout.strip()

    def login(self, host: str, user: str, password: str) -> None:
        self.run("login", "--tls-verify=false", "-u", user, "--password-stdin", host, stdin=password)

    @property
    def policy(self) -> str:
        return str(self.home / "policy.json")
