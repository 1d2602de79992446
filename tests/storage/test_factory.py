from __future__ import annotations

import pytest

from soko.storage import FilesystemDriver
from soko.storage.factory import open_storage
from soko.storage.s3 import S3Driver


def test_default_and_file_urls_are_the_filesystem_driver(tmp_path):
    default = open_storage("", str(tmp_path / "default"))
    assert isinstance(default, FilesystemDriver) and default.root == str(tmp_path / "default")
    explicit = open_storage(f"file://{tmp_path}/blobs", "unused")
    assert isinstance(explicit, FilesystemDriver) and explicit.root == f"{tmp_path}/blobs"


def test_s3_url_is_the_s3_driver():
    driver = open_storage("s3://bucket/prefix?endpoint_url=http://127.0.0.1:1&addressing_style=path", "unused")
    assert isinstance(driver, S3Driver) and driver.location.bucket == "bucket"


@pytest.mark.parametrize("url", ["ftp://x/y", "file://host/path", "file:relative", "gs://bucket"])
def test_unsupported_urls_say_what_to_use(url):
    with pytest.raises(ValueError, match="file:///path"):
        open_storage(url, "unused")


@pytest.mark.parametrize("url", ["", "file:///tmp/blobs"])
def test_storage_redirect_is_refused_without_s3(url):
    """storage_redirect on a filesystem store would be stored and then do nothing: refused at start, naming S3."""
    with pytest.raises(ValueError, match="storage_redirect needs S3 storage"):
        open_storage(url, "unused", redirect_expiry=600)


def test_storage_redirect_turns_on_the_s3_drivers_redirects():
    driver = open_storage("s3://bucket/p?endpoint_url=http://127.0.0.1:1", "unused", redirect_expiry=600)
    assert isinstance(driver, S3Driver) and driver.capabilities.redirect
