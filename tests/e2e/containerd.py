"""A containerd daemon of the test's own (Debian's ``containerd``), and ``ctr`` against it.

The daemon gets its own root, state dir and sockets in a short temporary directory (a unix socket path must fit
in 108 bytes) and a config that turns off what needs the host: the CRI plugin (Kubernetes' kubelet talks to it, not
to registries), ``/opt`` plugins and the snapshotters for other filesystems. Pulls unpack with the ``native``
snapshotter, which needs no kernel overlay. ``ctr images pull/push --user AWS:<token>`` is the registry client
that Kubernetes and ECS nodes run (the kubelet's pulls go through the same containerd code).
"""

from __future__ import annotations

import platform
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 20.0
CTR_TIMEOUT = 120
DISABLED_PLUGINS = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.tracing.processor.v1.otlp",
]


class ContainerdError(RuntimeError):
    pass


def go_arch() -> str:
    """This machine's architecture as OCI configs name it (ctr unpacks only images for it)."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


@dataclass
class Containerd:
    home: Path
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.home / "c.sock"

    @classmethod
    def start(cls, home: Path) -> Containerd:
        config = home / "config.toml"
        quoted = ", ".join(f'"{plugin}"' for plugin in DISABLED_PLUGINS)
        config.write_text(
            "version = 2\n"
            f'root = "{home / "root"}"\n'
            f'state = "{home / "state"}"\n'
            f"disabled_plugins = [{quoted}]\n"
            f'[grpc]\n  address = "{home / "c.sock"}"\n'
            f'[ttrpc]\n  address = "{home / "c.sock.ttrpc"}"\n'
        )
        with (home / "containerd.log").open("wb") as log:
            proc = subprocess.Popen(["containerd", "--config", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        daemon = cls(home, proc)
        deadline = time.monotonic() + START_TIMEOUT
        while not daemon.socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                daemon.stop()
                raise ContainerdError(f"containerd did not open {daemon.socket}\n{daemon.log_tail()}")
            time.sleep(0.05)
        daemon.ctr("version")
        return daemon

    def log_tail(self) -> str:
        return (self.home / "containerd.log").read_text(errors="replace")[-3000:]

    def ctr(self, *args: str) -> str:
        return self.ctr_bytes(*args).decode()

    def ctr_bytes(self, *args: str) -> bytes:
        argv = ["ctr", "--address", str(self.socket), *args]
        result = subprocess.run(argv, capture_output=True, timeout=CTR_TIMEOUT, check=False,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ContainerdError(f"ctr failed ({result.returncode}): {' '.join(argv)}\n"
                                  f"{result.stderr.decode(errors='replace')[-3000:]}\n"
                                  f"--- containerd ---\n{self.log_tail()}")
        return result.stdout

    def unpacked_files(self, name: str) -> list[Path]:
        """Files called ``name`` in the native snapshotter's snapshots (what a pull unpacked)."""
        return sorted((self.home / "root" / "io.containerd.snapshotter.v1.native" / "snapshots").glob(f"*/{name}"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
