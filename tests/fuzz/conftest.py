"""Wire-format inputs do not depend on the database: the fuzz tests run on SQLite only (keeps the suite short)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def database_url(tmp_path) -> str:
    os.makedirs(tmp_path / "data", exist_ok=True)
    return f"sqlite:///{tmp_path / 'data' / 'metadata.db'}"
