"""The /v2/ upload and blob suites, served from S3-compatible storage instead of the filesystem: every push,
chunked or monolithic, resumed or cancelled, and every read (ranges included) behaves the same."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from soko.meta.db import Database
from soko.registry import Registry
from tests.oci.conftest import auth_header  # noqa: F401 - fixture
from tests.oci.test_blobs import *  # noqa: F403 - the same tests, on S3
from tests.oci.test_uploads import *  # noqa: F403
from tests.s3 import s3_driver, s3_endpoint  # noqa: F401 - fixtures


@pytest.fixture
def database_url(tmp_path) -> Iterator[str]:  # the storage is what differs here: SQLite is enough
    yield f"sqlite:///{tmp_path / 'metadata.db'}"


@pytest.fixture
def registry(settings, s3_driver) -> Iterator[Registry]:  # noqa: F811
    os.makedirs(settings.data_dir, exist_ok=True)
    db = Database(settings.effective_database_url, pool_size=4)
    db.migrate()
    reg = Registry(settings, db, s3_driver)
    yield reg
    reg.close()
