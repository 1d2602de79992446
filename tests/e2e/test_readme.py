"""The README's quick start, run as written, so a new user's first commands cannot drift from what works.

The server is started with ``scripts/serve.sh --listen 127.0.0.1:PORT --data-dir TMP/soko-data`` (a free port and
a data dir of the test's own). The blocks run in TMP, which stands for the top of the checkout: its ``.venv`` links
to the project's venv and ``soko-data`` is the server's data dir. The one change made to the README's text:
``127.0.0.1:5000`` becomes the server's port. HOME, the XDG dirs and TMPDIR are temporary, so skopeo's login and the
AWS CLI read and write nothing of the machine's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from .servers import RegistryServer, start_soko_with_serve_sh

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("readme")]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_HOST = "127.0.0.1:5000"
SCRIPT_TIMEOUT = 120


def section(title: str) -> str:
    """The text of the README's ``## title`` section, up to the next ``## `` heading."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, RegistryServer]]:
    root = tmp_path_factory.mktemp("checkout")
    venv = ROOT / ".venv"
    assert (venv / "bin" / "soko").exists(), f"{venv} has no bin/soko: run scripts/bootstrap.sh --test"
    stamps = [venv / ".installed-test", venv / ".installed"]
    pyproject = (ROOT / "pyproject.toml").stat().st_mtime
    assert any(stamp.exists() and stamp.stat().st_mtime >= pyproject for stamp in stamps), \
        "the venv is older than pyproject.toml (scripts/serve.sh would reinstall it under the running tests): " \
        "run scripts/bootstrap.sh --test"
    (root / ".venv").symlink_to(venv)
    server = start_soko_with_serve_sh(ROOT, root / "soko-data")
    try:
        yield root, server
    finally:
        assert server.stop() == 0, server.log_tail()


def run_as_user(root: Path, script: str, server: RegistryServer) -> subprocess.CompletedProcess[str]:
    home = root / "home"
    for path in (home / "run", home / "tmp"):
        path.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    env |= {"HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run"), "XDG_CONFIG_HOME": str(home / ".config"),
            "TMPDIR": str(home / "tmp")}
    script = script.replace(README_HOST, server.host)
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=root, env=env, capture_output=True,
                          text=True, timeout=SCRIPT_TIMEOUT, check=False, stdin=subprocess.DEVNULL)


def quick_start_blocks() -> list[str]:
    """The quick start's shell blocks: log in, push and pull; then the admin ones, run "in the same shell"."""
    blocks = shell_blocks(section("Quick start"))
    assert len(blocks) == 3, f"the quick start has {len(blocks)} shell blocks; this test runs three"
    script = "\n".join(blocks)
    assert re.findall(r"127\.0\.0\.1:\d+", script) == [README_HOST] * script.count("127.0.0.1:"), \
        "the quick start names another port than the one scripts/serve.sh listens on"
    return blocks


def assert_ran(result: subprocess.CompletedProcess[str], server: RegistryServer) -> None:
    assert result.returncode == 0, (f"the README's quick start failed ({result.returncode})\n--- stdout ---\n"
                                    f"{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}\n"
                                    f"--- server ---\n{server.log_tail()}")


def test_quick_start_push_and_pull_as_written(checkout: tuple[Path, RegistryServer]) -> None:
    root, server = checkout
    push_pull = quick_start_blocks()[0]
    assert README_HOST in push_pull
    result = run_as_user(root, push_pull, server)
    assert_ran(result, server)
    assert "Login Succeeded" in result.stdout
    pulled = json.loads((root / "pulled" / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in pulled["manifests"]] == ["v1"]


def run_admin_block(index: int, checkout: tuple[Path, RegistryServer]) -> str:
    """An admin block runs "in the same shell" as the first: the first block's lines that set the shell up (the
    venv's ``source`` line) come first. Each block is its own test: a ``soko`` command starts in about a second."""
    root, server = checkout
    blocks = quick_start_blocks()
    setup = [line for line in blocks[0].splitlines() if line.startswith("source ")]
    assert setup, "the quick start no longer puts soko on PATH"
    result = run_as_user(root, "\n".join([*setup, blocks[index]]), server)
    assert_ran(result, server)
    return result.stdout + result.stderr


def test_quick_start_account_commands_as_written(checkout: tuple[Path, RegistryServer]) -> None:
    output = run_admin_block(1, checkout)
    assert json.loads(output.splitlines()[0])["AccountId"] == "111122223333"  # soko account create


def test_quick_start_maintenance_commands_as_written(checkout: tuple[Path, RegistryServer]) -> None:
    assert "no problems" in run_admin_block(2, checkout)  # soko fsck


def test_readme_installs_the_aws_cli_version_the_tests_use() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [spec for spec in pyproject["project"]["optional-dependencies"]["test"] if spec.startswith("awscli==")]
    assert pins, "pyproject.toml's test extra no longer pins awscli"
    assert f"pip install {pins[0]}" in section("Quick start")
