"""Encryption at rest: raw AES-256-GCM throughput on this machine, and what sealing costs the storage driver's
write (push) and read (pull) paths, sealed vs plaintext, on the filesystem driver in this process.

    .venv/bin/python -m bench.encryption [--mib 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from soko.crypto.driver import SealedDriver
from soko.crypto.keys import KeyRing
from soko.storage import FilesystemDriver, StorageDriver

PIECE = 1 << 20


def _raw_gcm(total: int) -> float:
    cipher, data, nonce = AESGCM(os.urandom(32)), os.urandom(1 << 18), os.urandom(12)
    start = time.perf_counter()
    for _ in range(total // len(data)):
        cipher.encrypt(nonce, data, b"aad")
    return total / (time.perf_counter() - start)


def _write(driver: StorageDriver, path: str, data: bytes, total: int) -> float:
    start = time.perf_counter()
    writer = driver.writer(path)
    for _ in range(total // len(data)):
        writer.write(data)
    writer.commit()
    return total / (time.perf_counter() - start)


def _read(driver: StorageDriver, path: str) -> float:
    start = time.perf_counter()
    got = 0
    with driver.reader(path) as f:
        while piece := f.read(PIECE):
            got += len(piece)
    return got / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    total = parser.parse_args().mib << 20
    data = os.urandom(PIECE)
    print(f"AES-256-GCM raw (256 KiB segments, one core): {_raw_gcm(total) / 1e9:.2f} GB/s")
    with tempfile.TemporaryDirectory() as root:
        plain = FilesystemDriver(os.path.join(root, "plain"))
        sealed = SealedDriver(FilesystemDriver(os.path.join(root, "sealed")), KeyRing.service(os.urandom(32)))
        rows = []
        for name, driver in (("plaintext", plain), ("sealed", sealed)):
            write = _write(driver, "blobs/x", data, total)
            read = _read(driver, "blobs/x")
            rows.append((name, write, read))
        print(f"{'driver':<10} {'write GB/s':>10} {'read GB/s':>10}")
        for name, write, read in rows:
            print(f"{name:<10} {write / 1e9:>10.2f} {read / 1e9:>10.2f}")
        print(f"sealed/plaintext: write {rows[1][1] / rows[0][1]:.2f}x, read {rows[1][2] / rows[0][2]:.2f}x")


if __name__ == "__main__":
    main()
