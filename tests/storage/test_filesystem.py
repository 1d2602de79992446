from __future__ import annotations

import pytest

from soko.storage import FilesystemDriver
from tests.storage.driver_suite import DriverSuite


class TestFilesystemDriver(DriverSuite):
    @pytest.fixture
    def driver(self, tmp_path) -> FilesystemDriver:
        return FilesystemDriver(str(tmp_path / "root"))

    def test_local_path_enables_sendfile(self, driver: FilesystemDriver) -> None:
        driver.put_content("blobs/x", b"1")
        with open(driver.local_path("blobs/x"), "rb") as f:
            assert f.read() == b"1"
