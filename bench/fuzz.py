"""Long property-based fuzzing of Soko's wire inputs (issue 11): the ECR JSON, IAM/STS Query and /v2/ properties of
``tests/fuzz/test_fuzz.py`` — never a 5xx, never a hang (10 s per request) — with thousands of random examples.
``python bench/fuzz.py [--examples 5000]``

Runs those tests under pytest with ``SOKO_FUZZ_EXAMPLES`` set (CI runs 40 per API, derandomized); above 100
examples hypothesis explores afresh every run and prints any falsifying example. Exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="examples per API")
    args = parser.parse_args(argv)
    env = {**os.environ, "SOKO_FUZZ_EXAMPLES": str(args.examples)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "tests/fuzz/test_fuzz.py"]
    return subprocess.run(cmd, cwd=REPO, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
