"""The GC race scenario shared by ``tests/stress/test_gc_race.py`` (short, CI) and ``bench/stress.py`` (minutes).

Threads drive the domain service (the ``Registry`` object) concurrently for a while:

* **pushers** push images (a random config, 1-3 layers: fresh random ones and ones from a pool shared by every
  repository, sometimes *mounted* from another repository instead of uploaded), onto a small set of tags (so tags
  move), and now and then two untagged images and an OCI index over them;
* a **deleter** deletes manifests by digest, tags (OCI), and tags with their image (ECR BatchDeleteImage — that
  path enqueues no link review, so the collector's sweep finds its links);
* a **tag mover** re-points tags at existing images (PUT of an existing manifest under another tag);
* a **puller** pulls by tag and reads and re-hashes every blob; a blob missing while its manifest still stands
  (seen twice) is a violation;
* a **lifecycle** thread runs :class:`LifecycleRunner` in a loop (keep the last N images of each repository);
* a **collector** runs ``registry.gc.run(grace_period=G)`` in a loop;
* a **meter** reads ``registry.metering.stored()`` in a loop and checks that each snapshot is self-consistent.

Expected failures are counted by type (a push whose blob was reclaimed before its manifest arrived,
MANIFEST_BLOB_UNKNOWN; deleting what a concurrent thread deleted, MANIFEST_UNKNOWN; …); any other exception is a
failure. :func:`verify` then checks the end state: fsck clean, and after one more GC with grace 0 and nothing in
flight, blob rows == linked digests == files in storage, links == references, no review left, and the metering
figures equal a recomputation from the raw rows.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from soko.crypto import rows as crypto_rows
from soko.errors import (
    BlobUnknown,
    ManifestBlobUnknown,
    ManifestReferenced,
    ManifestUnknown,
    ReferencedManifestUnknown,
)
from soko.meta.schema import (
    blobs,
    gc_link_reviews,
    manifest_blobs,
    manifests,
    repository_blobs,
    tags,
    uploads,
)
from soko.meta.schema import repositories as repos
from soko.registry.fsck import check
from soko.registry.lifecycle_runner import LifecycleRunner
from soko.registry.models import RepoRef
from soko.storage import PathNotFound
from tests.domain import push_blob
from tests.oci.helpers import sha256

ACCOUNT = "000000000000"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def keep_last(n: int) -> str:
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"keep the last {n} images",
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": n},
                    "action": {"type": "expire"},
                }
            ]
        }
    )


# Failures a correct registry produces under this workload, by (operation, exception type).
EXPECTED: dict[str, tuple[type[BaseException], ...]] = {
    # Blobs reclaimed (grace elapsed) or a child image deleted before the manifest / index arrived.
    "push": (ManifestBlobUnknown, ReferencedManifestUnknown),
    "delete": (ManifestUnknown, ManifestReferenced),
    "delete-tag": (ManifestUnknown,),
    # The image went away (deleted, expired, its links reclaimed) between reading it and re-tagging it.
    "tag-move": (ManifestUnknown, ManifestBlobUnknown, ReferencedManifestUnknown),
    "pull": (ManifestUnknown, BlobUnknown, FileNotFoundError, PathNotFound),
}


@dataclass
class Config:
    seconds: float = 10.0
    repositories: int = 3
    pushers: int = 3
    shared_layers: int = 12
    tags_per_repo: int = 6
    keep_images: int = 5
    delete_pause: float = 0.3  # between deletes: slow enough that lifecycle expiry has images to expire
    grace: float = 2.0
    gc_pause: float = 0.2
    lifecycle_pause: float = 0.5
    sweep_storage: bool = True
    seed: int = 1


@dataclass
class Stats:
    ops: Counter = field(default_factory=Counter)
    expected: Counter = field(default_factory=Counter)
    unexpected: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # tracebacks of unexpected errors (first few)
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def op(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.ops[name] += n

    def error(self, name: str, exc: BaseException) -> None:
        key = f"{name}: {type(exc).__name__}"
        with self.lock:
            if isinstance(exc, EXPECTED.get(name, ())):
                self.expected[key] += 1
            else:
                self.unexpected[key] += 1
                if len(self.failures) < 20:
                    self.failures.append(f"{key}\n{''.join(traceback.format_exception(exc))}")

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)

    @property
    def ok(self) -> bool:
        return not self.unexpected and not self.violations

    def summary(self) -> str:
        lines = ["operations:"]
        lines += [f"  {k:<28} {v}" for k, v in sorted(self.ops.items())]
        lines.append("expected errors:" + ("" if self.expected else " none"))
        lines += [f"  {k:<40} {v}" for k, v in sorted(self.expected.items())]
        lines.append("UNEXPECTED errors:" + ("" if self.unexpected else " none"))
        lines += [f"  {k:<40} {v}" for k, v in sorted(self.unexpected.items())]
        lines.append("violations:" + ("" if self.violations else " none"))
        lines += [f"  {v}" for v in self.violations[:50]]
        return "\n".join(lines)


# ---- pushing through the domain ----------------------------------------------------------------------------------
def image_manifest(config: bytes, layers: list[bytes]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config),
                       "size": len(config)},
            "layers": [{"mediaType": LAYER, "digest": sha256(layer), "size": len(layer)} for layer in layers],
        }
    ).encode()


class Workload:
    def __init__(self, registry, config: Config, stats: Stats | None = None) -> None:
        self.registry = registry
        self.config = config
        self.stats = stats or Stats()
        self.refs = [RepoRef(ACCOUNT, f"stress/repo{i}") for i in range(config.repositories)]
        rng = random.Random(config.seed)
        self.shared = [rng.randbytes(rng.randint(200, 4000)) for _ in range(config.shared_layers)]
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- helpers --------------------------------------------------------------------------------------------------
    def _random_manifest(self, rng: random.Random, ref: RepoRef, media_type: str | None = None) -> str | None:
        with self.registry.ctx.db.read() as conn:
            query = (
                sa.select(manifests.c.digest)
                .join(repos, repos.c.id == manifests.c.repository_id)
                .where(repos.c.account_id == ref.account_id, repos.c.name == ref.name)
            )
            if media_type:
                query = query.where(manifests.c.media_type == media_type)
            digests = list(conn.execute(query).scalars())
        return rng.choice(digests) if digests else None

    def _random_tag(self, rng: random.Random, ref: RepoRef) -> str | None:
        with self.registry.ctx.db.read() as conn:
            names = list(
                conn.execute(
                    sa.select(tags.c.name)
                    .join(repos, repos.c.id == tags.c.repository_id)
                    .where(repos.c.account_id == ref.account_id, repos.c.name == ref.name)
                ).scalars()
            )
        return rng.choice(names) if names else None

    def _layer(self, rng: random.Random, ref: RepoRef) -> bytes:
        if rng.random() < 0.5:
            data = os.urandom(rng.randint(100, 3000))
            push_blob(self.registry, ref, data)
            return data
        data = rng.choice(self.shared)
        if rng.random() < 0.3:  # mount it from another repository when one has it, else upload
            source = rng.choice([r for r in self.refs if r != ref] or [ref])
            if self.registry.blobs.mount(ref, sha256(data), source) is not None:
                self.stats.op("mount")
                return data
        push_blob(self.registry, ref, data)
        return data

    def push_image(self, rng: random.Random, ref: RepoRef, reference: str | None) -> tuple[str, bytes]:
        config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
        push_blob(self.registry, ref, config)
        layers = [self._layer(rng, ref) for _ in range(rng.randint(1, 3))]
        self.stats.op("blob-push", 1 + len(layers))
        payload = image_manifest(config, layers)
        digest = sha256(payload)
        self.registry.manifests.put(ref, reference or digest, payload, OCI_MANIFEST)
        return digest, payload

    # -- the threads ----------------------------------------------------------------------------------------------
    def _loop(self, name: str, body: Callable[[random.Random], None], pause: float = 0.0) -> None:
        rng = random.Random(f"{self.config.seed}/{name}")
        while not self.stop.is_set():
            try:
                body(rng)
            except Exception as exc:  # counted, classified; the thread goes on
                self.stats.error(name.split("#")[0], exc)
            if pause:
                self.stop.wait(pause)

    def _pusher(self, rng: random.Random) -> None:
        ref = rng.choice(self.refs)
        if rng.random() < 0.15:
            children = [self.push_image(rng, ref, None) for _ in range(2)]
            index = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_INDEX,
                    "manifests": [
                        {"mediaType": OCI_MANIFEST, "digest": d, "size": len(p),
                         "platform": {"architecture": arch, "os": "linux"}}
                        for (d, p), arch in zip(children, ("amd64", "arm64"), strict=True)
                    ],
                }
            ).encode()
            self.registry.manifests.put(ref, f"t{rng.randrange(self.config.tags_per_repo)}", index, OCI_INDEX)
            self.stats.op("push-index")
            self.stats.op("push", 2)
        else:
            self.push_image(rng, ref, f"t{rng.randrange(self.config.tags_per_repo)}")
            self.stats.op("push")

    def _deleter(self, rng: random.Random) -> None:
        ref = rng.choice(self.refs)
        roll = rng.random()
        if roll < 0.6:
            digest = self._random_manifest(rng, ref)
            if digest:
                try:
                    self.registry.manifests.delete(ref, digest)
                    self.stats.op("delete")
                except Exception as exc:
                    self.stats.error("delete", exc)
        else:
            tag = self._random_tag(rng, ref)
            if tag:
                try:
                    self.registry.manifests.delete(ref, tag, drop_untagged=roll < 0.85)
                    self.stats.op("delete-tag")
                except Exception as exc:
                    self.stats.error("delete-tag", exc)
        self.stop.wait(self.config.delete_pause)

    def _tag_mover(self, rng: random.Random) -> None:
        ref = rng.choice(self.refs)
        digest = self._random_manifest(rng, ref)
        if digest:
            record = self.registry.manifests.get(ref, digest)
            media_type = json.loads(record.payload).get("mediaType")
            self.registry.manifests.put(ref, f"t{rng.randrange(self.config.tags_per_repo)}", record.payload,
                                        media_type)
            self.stats.op("tag-move")
        self.stop.wait(0.05)

    def _puller(self, rng: random.Random) -> None:
        ref = rng.choice(self.refs)
        tag = self._random_tag(rng, ref)
        if not tag:
            self.stop.wait(0.05)
            return
        record = self.registry.manifests.get(ref, tag)
        body = json.loads(record.payload)
        if body.get("mediaType") == OCI_INDEX:
            record = self.registry.manifests.get(ref, body["manifests"][0]["digest"])
            body = json.loads(record.payload)
        for descriptor in [body["config"], *body["layers"]]:
            try:
                self._read_blob(ref, descriptor["digest"])
            except (BlobUnknown, FileNotFoundError, PathNotFound) as exc:
                # Legitimate only if the manifest went away meanwhile; re-check (twice, a second apart).
                if self._still_broken(ref, record.digest, descriptor["digest"]):
                    self.stats.violation(f"pull: {ref.name}@{record.digest} stands but blob {descriptor['digest']} "
                                         f"is unreadable ({type(exc).__name__})")
                raise
        self.stats.op("pull")

    def _read_blob(self, ref: RepoRef, digest: str) -> None:
        content = self.registry.blobs.open(ref, digest)
        with self.registry.blobs.reader(content) as f:
            data = f.read()
        if sha256(data) != digest:
            self.stats.violation(f"pull: blob {digest} of {ref.name} has wrong content ({len(data)} bytes)")

    def _still_broken(self, ref: RepoRef, manifest: str, digest: str) -> bool:
        for _ in range(2):
            try:
                self.registry.manifests.get(ref, manifest)
            except ManifestUnknown:
                return False
            try:
                self._read_blob(ref, digest)
                return False
            except (BlobUnknown, FileNotFoundError, PathNotFound):
                time.sleep(1.0)
        return True

    def _lifecycle(self, rng: random.Random) -> None:
        runs = LifecycleRunner(self.registry).run()
        for run in runs:
            self.stats.op("lifecycle-expired", len(run.expired))
            self.stats.op("lifecycle-skipped", len(run.skipped))
            if run.error:
                self.stats.violation(f"lifecycle: {run.repository}: {run.error}")
        self.stats.op("lifecycle-run")

    def _collector(self, rng: random.Random) -> None:
        report = self.registry.gc.run(grace_period=self.config.grace, sweep_storage=self.config.sweep_storage)
        self.stats.op("gc-run")
        self.stats.op("gc-links-deleted", report.links_deleted)
        self.stats.op("gc-blobs-deleted", report.blobs_deleted)
        self.stats.op("gc-stray-files", report.stray_files_deleted)

    def _meter(self, rng: random.Random) -> None:
        stored = self.registry.metering.stored()
        shares: Counter = Counter()
        for repo in stored.repositories:
            shares[repo.account_id] += repo.physical_bytes
        for account, physical in stored.account_physical.items():
            if shares[account] != physical:
                self.stats.violation(
                    f"metering snapshot: repositories' physical shares add up to {shares[account]}, account "
                    f"{account} has {physical}"
                )
        self.stats.op("metering-read")
        self.stop.wait(0.3)

    # -- running --------------------------------------------------------------------------------------------------
    def start(self) -> None:
        rng = random.Random(self.config.seed)
        for ref in self.refs:  # every repository exists before the policy is put on it
            self.push_image(rng, ref, "t0")
            self.registry.lifecycle.put(ref, keep_last(self.config.keep_images))
        plan: list[tuple[str, Callable[[random.Random], None], float]] = [
            *((f"push#{i}", self._pusher, 0.0) for i in range(self.config.pushers)),
            ("delete", self._deleter, 0.0),
            ("tag-move", self._tag_mover, 0.0),
            ("pull", self._puller, 0.0),
            ("lifecycle", self._lifecycle, self.config.lifecycle_pause),
            ("gc", self._collector, self.config.gc_pause),
            ("metering", self._meter, 0.0),
        ]
        for name, body, pause in plan:
            thread = threading.Thread(target=self._loop, args=(name, body, pause), name=f"stress-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def join(self, timeout: float = 120.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self.stats.violation(f"thread {thread.name} did not stop within {timeout:.0f}s (deadlock?)")

    def run(self, progress: Callable[[str], None] | None = None) -> Stats:
        self.start()
        end = time.monotonic() + self.config.seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 10.0))
            if progress:
                progress(", ".join(f"{k}={v}" for k, v in sorted(self.stats.ops.items()) if not k.startswith("gc-")))
        self.join()
        return self.stats


# ---- the end state ---------------------------------------------------------------------------------------------
def storage_blob_files(registry) -> dict[str, int]:
    """digest → size of every file under blobs/ in storage."""
    found: dict[str, int] = {}
    try:
        for info in registry.ctx.storage.walk("blobs"):
            parts = info.path.split("/")
            if len(parts) == 4:
                found[f"{parts[1]}:{parts[3]}"] = info.size
    except PathNotFound:
        pass
    return found


def recompute_stored(conn: sa.Connection) -> tuple[dict[tuple[str, str], tuple[int, int]], dict[str, int], int]:
    """From the raw rows, in Python: (account, repo) → (logical, physical share), account → physical, Σ blobs."""
    repo_rows = {r.id: (r.account_id, r.name) for r in conn.execute(sa.select(repos.c.id, repos.c.account_id,
                                                                            repos.c.name))}
    sizes = dict(conn.execute(sa.select(blobs.c.digest, blobs.c.size)).all())
    manifest_bytes: Counter = Counter()
    for repo_id, payload in conn.execute(sa.select(manifests.c.repository_id, manifests.c.payload)):
        # manifests are sealed at rest (soko.crypto.rows): metering counts their plaintext size
        manifest_bytes[repo_id] += len(payload) - (crypto_rows.OVERHEAD if crypto_rows.is_sealed(payload) else 0)
    linkers: dict[tuple[str, str], list[int]] = {}  # (account, digest) → repository ids linking it
    logical: Counter = Counter()
    for repo_id, digest in conn.execute(sa.select(repository_blobs.c.repository_id, repository_blobs.c.digest)):
        logical[repo_id] += sizes[digest]
        linkers.setdefault((repo_rows[repo_id][0], digest), []).append(repo_id)
    physical: Counter = Counter()
    account_physical: Counter = Counter()
    for (account, digest), ids in linkers.items():
        size, n = sizes[digest], len(ids)
        account_physical[account] += size
        for k, repo_id in enumerate(sorted(ids)):
            physical[repo_id] += size // n + (1 if k < size % n else 0)
    per_repo = {}
    for repo_id, key in repo_rows.items():
        per_repo[key] = (logical[repo_id] + manifest_bytes[repo_id], physical[repo_id] + manifest_bytes[repo_id])
        account_physical[key[0]] += manifest_bytes[repo_id]
    return per_repo, dict(account_physical), sum(sizes.values())


def verify(registry, stats: Stats, *, final_gc: Callable[[], object] | None = None,
           fsck: Callable[[], list[str]] | None = None) -> Stats:
    """Check the end state; violations go into ``stats``. ``final_gc``/``fsck`` default to in-process calls (the
    bench passes the ``soko gc`` / ``soko fsck`` CLIs)."""
    def run_fsck(when: str) -> None:
        problems = fsck() if fsck else [str(p) for p in check(registry.ctx)]
        for problem in problems:
            stats.violation(f"fsck {when}: {problem}")

    run_fsck("after the run")
    if final_gc:
        final_gc()
    else:
        registry.gc.run(grace_period=0)
    run_fsck("after the final gc")
    with registry.ctx.db.read() as conn:
        blob_rows = dict(conn.execute(sa.select(blobs.c.digest, blobs.c.size)).all())
        linked = set(conn.execute(sa.select(repository_blobs.c.digest)).scalars())
        links = set(conn.execute(sa.select(repository_blobs.c.repository_id, repository_blobs.c.digest)).all())
        referenced = set(
            conn.execute(
                sa.select(manifests.c.repository_id, manifest_blobs.c.digest)
                .join(manifests, manifests.c.id == manifest_blobs.c.manifest_id)
                .distinct()
            ).all()
        )
        reviews = conn.execute(sa.select(sa.func.count()).select_from(gc_link_reviews)).scalar_one()
        open_uploads = conn.execute(sa.select(sa.func.count()).select_from(uploads)).scalar_one()
        per_repo, account_physical, blob_total = recompute_stored(conn)
    files = storage_blob_files(registry)
    if set(blob_rows) != linked:
        stats.violation(f"{len(set(blob_rows) - linked)} blob row(s) no repository links survived gc with grace 0, "
                        f"e.g. {sorted(set(blob_rows) - linked)[:3]}")
    if links != referenced:
        stats.violation(f"{len(links - referenced)} unreferenced link(s) survived gc with grace 0, "
                        f"e.g. {sorted(links - referenced)[:3]}")
    if set(files) != set(blob_rows):
        stats.violation(
            f"storage and blob rows differ: {len(set(files) - set(blob_rows))} file(s) without a row, "
            f"{len(set(blob_rows) - set(files))} row(s) without a file"
        )
    for digest, size in blob_rows.items():
        if digest in files and files[digest] != size:
            stats.violation(f"blob {digest}: row says {size} bytes, storage holds {files[digest]}")
    if reviews:
        stats.violation(f"{reviews} link review(s) left after gc with grace 0")
    if open_uploads:
        stats.violation(f"{open_uploads} upload session(s) left open")
    try:
        trash = registry.ctx.storage.list("trash")
    except PathNotFound:
        trash = []
    if trash:
        stats.violation(f"{len(trash)} file(s) left in trash/")

    stored = registry.metering.stored()
    reported = {(r.account_id, r.repository): (r.logical_bytes, r.physical_bytes) for r in stored.repositories}
    if reported != per_repo:
        diff = {k: (reported.get(k), per_repo.get(k)) for k in set(reported) | set(per_repo)
                if reported.get(k) != per_repo.get(k)}
        stats.violation(f"metering per repository (reported, recomputed) differ: {diff}")
    if {a: b for a, b in stored.account_physical.items() if b or a in account_physical} != account_physical:
        stats.violation(f"metering account physical {stored.account_physical} != recomputed {account_physical}")
    if stored.registry_blob_bytes != blob_total or blob_total != sum(files.values()):
        stats.violation(f"metering registry blob bytes {stored.registry_blob_bytes}, recomputed {blob_total}, "
                        f"storage holds {sum(files.values())}")
    stats.op("verified-blobs", len(blob_rows))
    stats.op("verified-repositories", len(per_repo))
    return stats
