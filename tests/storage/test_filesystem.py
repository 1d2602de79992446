from __future__ import annotations

import pytest

from soko.storage import FilesystemDriver
from tests.storage.driver_suite import DriverSuite


class TestFilesystemDriver(DriverSuite):
    @pytest.fixture
    def driver(self, tmp_path) -> FilesystemDriver:
        return FilesystemDriver(str(tmp_path / "root"))

