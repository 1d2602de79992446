"""Blob storage drivers: digest-addressed content and in-flight upload data, nothing else."""

from soko.storage.base import FileInfo, FileWriter, InvalidOffset, PathNotFound, StorageDriver, StorageError
from soko.storage.filesystem import FilesystemDriver

__all__ = [
    "FileInfo",
    "FileWriter",
    "FilesystemDriver",
    "InvalidOffset",
    "PathNotFound",
    "StorageDriver",
    "StorageError",
]
