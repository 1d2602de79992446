"""The plaintext blob cache: decrypted blobs kept in memory (tmpfs), so pulls of encrypted content are sent by the
server itself from a local file, as unencrypted blobs were, instead of being decrypted through Python on every pull.

Why it may exist at all: encryption at rest forbids plaintext in the data dir or the bucket, i.e. on anything that
persists. A tmpfs (``/dev/shm``) is memory: gone at reboot, never written to a disk (unless the operator gave the
machine swap, which pages out every process's memory alike: documented, the OS's concern). So the cache refuses any
directory that is not tmpfs or ramfs unless the operator says otherwise (``plaintext_cache_allow_disk``).

Layout (one directory per deployment, shared by the worker processes of a node; 0700, files 0600)::

    <root>/<space>/<algorithm>-<hex>     complete entries: <space> = aes256 | kms-<key id> | dsse-<key id>
    <root>/.fill-<space>-<alg>-<hex>     an entry being filled by a pull (flock held by its filler)
    <root>/.up-<upload id>               a push's plaintext as it streams in (flock held by its writer)
    <root>/.lock                         budget decisions (flock)

An entry only ever appears by ``rename`` of a temporary file that was checked first: its size, and its digest (a
pull's fill hashes what it writes; a push's keeps the bytes its running hash verified). A reader checks the size
again before serving, so a cut file is never sent; a crash leaves only temporary files, whose lock died with their
process: the next start (or budget pass) removes them. Eviction is least recently used, by modification time (a hit
touches its entry), under one flock across processes; entries used in the last ``KEEP_RECENT`` seconds are kept, so
the file a response is about to open is not taken from under it.

The cache serves nothing by itself: the caller has authorized the request, checked the blob's row (a blob deleted
by GC is not served, whatever is cached) and, for a customer key, the key's state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterable

log = logging.getLogger("soko.plain_cache")

TMPFS_TYPES = ("tmpfs", "ramfs")
KEEP_RECENT = 2.0  # seconds an entry just used is safe from eviction
TOUCH_EVERY = 1.0  # a hit moves the entry's mtime at most this often
AES256 = "aes256"
_UPLOAD_IDLE = 300.0  # a push's plaintext kept between its chunks at most this long
MAX_HELD_UPLOADS = 64  # and by so many uploads of a process at most (each is an open file), the least recent out
GROW_STEP = 16 << 20  # room a push without a length takes at a time


def space_dir(keyspace: str | None) -> str:
    """The directory name of a keyspace (None: the service key's content)."""
    return AES256 if keyspace is None else keyspace.replace("/", "-")


def _entry_name(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}-{hexpart}"


def filesystem_type(path: str) -> str:
    """The type of the filesystem holding ``path`` (from /proc/self/mounts: the longest mount point above it)."""
    real = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        return ""
    return kind


def auto_budget() -> int:
    """min(2 GiB, 1/8 of the machine's memory)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 8 << 30
    return min(2 << 30, memory // 8)


class CacheRefused(Exception):
    """The configured directory cannot hold plaintext (not memory, not ours)."""


def _private_dir(path: str) -> None:
    """Create ``path`` 0700 (and the missing parents), or check an existing one is a directory of ours, not a link
    (``/dev/shm`` is writable by everyone: another user could have made the name first)."""
    parent = os.path.dirname(path.rstrip("/"))
    if parent and not os.path.lexists(parent):
        _private_dir(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise CacheRefused(f"{path} is not a directory owned by this user (uid {os.getuid()})")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)


def _check_trusted(path: str, links: int = 0) -> None:
    """Refuse ``path`` when another user could replace a directory or link on the way to it, and so put files of
    theirs where entries are looked up (and served as the blob): each must belong to root or this user, and a
    directory others may write must be sticky (``/dev/shm``, ``/tmp``: there they cannot rename what is ours)."""
    uid = os.getuid()
    current = "/"
    for part in os.path.abspath(path).split("/"):
        if not part:
            continue
        current = os.path.join(current, part)
        info = os.lstat(current)
        if info.st_uid not in (0, uid):
            raise CacheRefused(f"{current} belongs to another user (uid {info.st_uid}): other users could change it")
        if stat.S_ISLNK(info.st_mode):
            if links >= 16:
                raise CacheRefused(f"{path}: too many symbolic links")
            _check_trusted(os.path.join(os.path.dirname(current), os.readlink(current)), links + 1)
            current = os.path.realpath(current)
        elif stat.S_IMODE(info.st_mode) & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise CacheRefused(f"{current} is writable by other users (and not sticky): other users could change it")


class Fill:
    """One entry being written: a locked temporary file, its running hash and size; ``commit`` renames it into
    place when it holds exactly the blob, else it is dropped. The file's length is the room it reserved (sparse:
    no memory until written), which every process's budget pass counts: fills never take more than the budget
    together, and one that would outgrow its room asks for more first."""

    def __init__(self, cache: PlainCache, temp: str, fd: int, hashed: bool) -> None:
        self.cache = cache
        self.temp = temp
        self.fd = fd
        self.size = 0
        self.reserved = 0
        self.hasher = hashlib.sha256() if hashed else None
        self.closed = False
        self.used = time.monotonic()
        # A response that ends (the client went away) drops its fill from the loop while a write may still run on a
        # thread: the descriptor is closed only between writes, never under one (a reused number would take them).
        self._lock = threading.RLock()

    def write(self, pieces: Iterable[bytes | memoryview]) -> bool:
        """Append ``pieces``; False (and the fill dropped) when the cache cannot take them (tmpfs full)."""
        with self._lock:
            return self._write(pieces)

    def _write(self, pieces: Iterable[bytes | memoryview]) -> bool:
        if self.closed:
            return False
        try:
            for piece in pieces:
                if self.size + len(piece) > self.cache.budget:  # (a push of unknown length, bigger than the cache)
                    self.abort()
                    return False
                view = memoryview(piece)
                needed = self.size + view.nbytes
                if needed > self.reserved and not self.cache._grow(self, needed, exact=False):
                    self.abort()  # (no room left under the budget: the push or pull goes on without a copy)
                    return False
                while view:
                    view = view[os.write(self.fd, view) :]
                self.size += len(piece)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM):
                log.warning("plaintext cache: could not write %s: %s", self.temp, exc)
            self.abort()
            return False
        self.used = time.monotonic()
        return True

    def digest(self, pieces: Iterable[bytes | memoryview]) -> None:
        if self.hasher is not None:
            for piece in pieces:
                self.hasher.update(piece)

    def commit(self, space: str | None, digest: str, size: int, *, verified: bool = False) -> bool:
        """Make the fill the entry of ``digest``: only if it holds ``size`` bytes and they hash to the digest
        (``verified``: the caller hashed exactly these bytes and checked them)."""
        with self._lock:
            return self._commit(space, digest, size, verified)

    def _commit(self, space: str | None, digest: str, size: int, verified: bool) -> bool:
        if self.closed:
            return False
        try:
            if self.size != size or os.fstat(self.fd).st_size != self.reserved:  # (cut by another: take_upload)
                return False
            if self.reserved != size:  # (an upload's last growth step reserved more than it needed)
                os.ftruncate(self.fd, size)
            if os.fstat(self.fd).st_size != size:
                return False
            if not verified:
                algorithm, _, hexpart = digest.partition(":")
                if self.hasher is None or algorithm != "sha256" or self.hasher.hexdigest() != hexpart:
                    log.warning("plaintext cache: a fill of %s does not match its digest; dropped", digest)
                    return False
            return self.cache._install(self.temp, space, digest, size)
        except (OSError, CacheRefused) as exc:  # never the caller's failure: a pull's last piece waits on this
            log.warning("plaintext cache: could not install %s: %s", digest, exc)
            return False
        finally:
            self.abort()

    def abort(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                # Only while the name is still this file: once renamed into place (or removed), it may be another
                # filler's new temporary file, which removing would make that fill fail.
                with contextlib.suppress(OSError):
                    if os.lstat(self.temp).st_ino == os.fstat(self.fd).st_ino:
                        os.unlink(self.temp)
                os.close(self.fd)  # (the lock goes with the descriptor)


class PlainCache:
    def __init__(self, root: str, budget: int, *, keep_recent: float = KEEP_RECENT) -> None:
        self.root = root
        self.budget = budget
        self.keep_recent = keep_recent
        self._uploads: dict[str, Fill] = {}  # this process's pushes, between their chunks
        self._lock = threading.Lock()
        # Every process using the directory holds a shared lock on .alive: the last one to stop empties it, so
        # plaintext lives in memory only while a server of this deployment runs on the node. A process starting
        # while that one removes the directory gets its lock on the removed file: then it makes the directory anew.
        alive = os.path.join(root, ".alive")
        for _ in range(5):
            _private_dir(root)
            _check_trusted(root)
            self._alive = os.open(alive, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._alive, fcntl.LOCK_SH)
            try:
                if os.lstat(alive).st_ino == os.fstat(self._alive).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(self._alive)
        else:
            raise CacheRefused(f"{root} keeps being removed by another process")
        self.clean()

    def close(self) -> None:
        """Let go of the directory; the last process of the node to do so removes it with every entry."""
        with self._lock:
            uploads, self._uploads = list(self._uploads.values()), {}
        for fill in uploads:
            fill.abort()
        try:
            fcntl.flock(self._alive, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # other processes still serve from it
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        finally:
            os.close(self._alive)

    @classmethod
    def open(cls, directory: str, budget: int, *, allow_disk: bool = False) -> PlainCache:
        if not allow_disk:
            parent = directory
            while not os.path.exists(parent):
                parent = os.path.dirname(parent)
            kind = filesystem_type(parent)
            if kind not in TMPFS_TYPES:
                raise CacheRefused(
                    f"{directory} is on a {kind or 'unknown'} filesystem, not tmpfs or ramfs: decrypted blobs would "
                    "reach a disk. Give plaintext_cache_dir a tmpfs directory, set plaintext_cache_bytes = 0 to turn "
                    "the cache off, or plaintext_cache_allow_disk = true if this filesystem is memory all the same"
                )
        return cls(directory, budget)

    # -- reading ------------------------------------------------------------------------------------------------

    def path(self, space: str | None, digest: str) -> str:
        return os.path.join(self.root, space_dir(space), _entry_name(digest))

    def lookup(self, space: str | None, digest: str, size: int) -> str | None:
        """The entry's path when it holds the whole blob (a regular file of ``size`` bytes: never a cut one)."""
        path = self.path(space, digest)
        try:
            info = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            if stat.S_ISREG(info.st_mode):
                log.warning("plaintext cache: %s holds %d bytes, not %d; dropped", path, info.st_size, size)
                self._unlink(path)
            return None
        now = time.time()
        if now - info.st_mtime >= TOUCH_EVERY:
            with contextlib.suppress(OSError):
                os.utime(path, (now, now))
        return path

    # -- filling ------------------------------------------------------------------------------------------------

    def _locked_temp(self, name: str) -> tuple[str, int] | None:
        """A temporary file locked by us (None: another process fills it now)."""
        temp = os.path.join(self.root, name)
        for _ in range(3):
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                same = os.fstat(fd).st_ino == os.lstat(temp).st_ino
            except FileNotFoundError:
                same = False
            if same:  # (not a name its previous filler renamed or removed while we opened it)
                os.ftruncate(fd, 0)  # what a filler that died left
                return temp, fd
            os.close(fd)
        return None

    def fill(self, space: str | None, digest: str, size: int) -> Fill | None:
        """Start filling the entry of ``digest`` (a pull that reads the whole blob); None when another process
        fills it already, it is there, or there is no room."""
        if size > self.budget or os.path.exists(self.path(space, digest)):
            return None
        return self._start(f".fill-{space_dir(space)}-{_entry_name(digest)}", size, hashed=True)

    def upload(self, upload_id: str, offset: int, length: int | None) -> Fill | None:
        """The plaintext of an upload, to append a chunk starting at ``offset`` to: the one this process holds
        when it ends there, or a new one when ``offset`` is 0; None otherwise (no entry from this push)."""
        with self._lock:
            fill = self._uploads.pop(upload_id, None)
            self._expire_uploads()
        if fill is not None and not fill.closed and fill.size == offset:
            return fill
        if fill is not None:
            fill.abort()
        if offset != 0 or (length or 0) > self.budget:
            return None
        return self._start(f".up-{upload_id}", length, hashed=False)  # (no length: room is taken as bytes come)

    def _start(self, name: str, size: int | None, hashed: bool) -> Fill | None:
        """A fill into the temporary file ``name`` with room for ``size`` bytes taken (None: another process
        fills it, no room, or the file cannot be made)."""
        try:
            locked = self._locked_temp(name)
        except OSError as exc:
            log.warning("plaintext cache: cannot make %s: %s", name, exc)
            return None
        if locked is None:
            return None
        fill = Fill(self, *locked, hashed=hashed)
        if size and not self._grow(fill, size):
            fill.abort()
            return None
        return fill

    def keep_upload(self, upload_id: str, fill: Fill) -> None:
        """Hold ``fill`` for the upload's next chunk or its completion (in this process)."""
        if fill.closed:
            return
        with self._lock:
            old = self._uploads.pop(upload_id, None)
            self._uploads[upload_id] = fill
            self._expire_uploads()
            while len(self._uploads) > MAX_HELD_UPLOADS:  # (uploads left open by the thousand)
                self._uploads.pop(next(iter(self._uploads))).abort()
        if old is not None and old is not fill:
            old.abort()

    def take_upload(self, upload_id: str) -> Fill | None:
        """The upload's plaintext this process holds (None: none, or another process streamed it: that file,
        useless now, is emptied and unlinked; its holder can no longer install it)."""
        with self._lock:
            fill = self._uploads.pop(upload_id, None)
        if fill is None:
            # Emptied first: unlinked only, its memory would stay, counted in no budget, until its holder lets go of
            # its descriptor (minutes later, at expiry).
            path = os.path.join(self.root, f".up-{upload_id}")
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, 0)
                finally:
                    os.close(fd)
            self._unlink(path)
        return fill

    def _expire_uploads(self) -> None:
        now = time.monotonic()
        for upload_id in [u for u, f in self._uploads.items() if now - f.used > _UPLOAD_IDLE]:
            self._uploads.pop(upload_id).abort()

    # -- budget -------------------------------------------------------------------------------------------------

    def _install(self, temp: str, space: str | None, digest: str, size: int) -> bool:
        directory = os.path.join(self.root, space_dir(space))
        with self._budget_lock():
            if not self._make_room(size, exclude=temp):
                return False
            _private_dir(directory)  # (under the lock: drop_space removes a keyspace's directory under it too)
            os.rename(temp, self.path(space, digest))
        return True

    def _grow(self, fill: Fill, needed: int, *, exact: bool = True) -> bool:
        """Reserve room for ``fill`` to hold ``needed`` bytes, evicting old entries if need be: its file is made
        that long (sparse) under the budget lock, so the next budget pass of any process counts it. Not ``exact``
        (bytes of unknown length coming in): room grows in steps of ``GROW_STEP``, one lock and scan per step, not
        per piece; just what is needed when a step does not fit."""
        step = needed if exact else min(max(needed, fill.reserved + GROW_STEP), self.budget)
        for target in dict.fromkeys((step, needed)):
            if target > self.budget:
                return False
            try:
                with self._budget_lock():
                    if self._make_room(target - fill.reserved):  # (its file counts already, at its reservation)
                        os.ftruncate(fill.fd, target)
                        fill.reserved = target
                        return True
            except OSError as exc:
                log.warning("plaintext cache: cannot reserve room for %s: %s", fill.temp, exc)
                return False
        return False

    def _budget_lock(self):
        @contextlib.contextmanager
        def held():
            fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

        return held()

    def _scan(self) -> tuple[int, list[tuple[float, int, str]]]:
        """(bytes held, entries as (mtime, size, path)), removing temporary files no live process holds."""
        used, entries = 0, []
        with os.scandir(self.root) as top:
            for item in top:
                if item.name.startswith("."):
                    temporary = item.name not in (".lock", ".alive") and item.is_file(follow_symlinks=False)
                    if temporary and not self._orphan(item.path):
                        used += item.stat(follow_symlinks=False).st_size
                    continue
                if not item.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(item.path) as inner:
                    for entry in inner:
                        with contextlib.suppress(FileNotFoundError):
                            info = entry.stat(follow_symlinks=False)
                            used += info.st_size
                            entries.append((info.st_mtime, info.st_size, entry.path))
        return used, entries

    def _orphan(self, path: str) -> bool:
        """Remove ``path`` (a temporary file) when no process holds its lock; True if it was removed."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino == os.lstat(path).st_ino:
                os.unlink(path)
        except BlockingIOError:
            return False
        except OSError:
            pass
        finally:
            os.close(fd)
        return True

    def _make_room(self, size: int, exclude: str | None = None) -> bool:
        used, entries = self._scan()
        if exclude is not None:  # (a fill being installed is counted already)
            used -= size
        if used + size <= self.budget:
            return True
        cutoff = time.time() - self.keep_recent
        for mtime, length, path in sorted(entries):
            if mtime > cutoff:
                break
            self._unlink(path)
            used -= length
            if used + size <= self.budget:
                return True
        return False

    def clean(self) -> None:
        """Remove what crashed fillers left (temporary files nobody holds)."""
        with self._budget_lock():
            self._scan()

    # -- dropping -----------------------------------------------------------------------------------------------

    @staticmethod
    def _unlink(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def drop(self, space: str | None, digest: str) -> None:
        self._unlink(self.path(space, digest))

    def drop_space(self, space: str) -> int:
        """Remove every entry of a keyspace (its key was disabled, scheduled for deletion or deleted)."""
        directory = os.path.join(self.root, space_dir(space))
        removed = 0
        try:
            with self._budget_lock():
                with contextlib.suppress(FileNotFoundError), os.scandir(directory) as inner:
                    for entry in inner:
                        self._unlink(entry.path)
                        removed += 1
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
        except OSError as exc:  # (the directory is gone: nothing left to drop; never a KMS call's failure)
            log.warning("plaintext cache: could not drop %s: %s", space, exc)
        return removed

    def drop_key(self, key_id: str) -> int:
        """Remove the entries of every keyspace of a KMS key (KMS and KMS_DSSE)."""
        return sum(self.drop_space(f"{kind}/{key_id}") for kind in ("kms", "dsse"))

    def key_spaces(self) -> list[str]:
        """The keyspaces (``kms/<key id>``, ``dsse/<key id>``) with entries here."""
        found: list[str] = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.root) as top:
            for item in top:
                kind, sep, key_id = item.name.partition("-")
                if sep and kind in ("kms", "dsse") and item.is_dir(follow_symlinks=False):
                    found.append(f"{kind}/{key_id}")
        return found


def open_for(
    directory: str, budget: int, allow_disk: bool, deployment_key: bytes, *, shm: str = "/dev/shm"
) -> PlainCache | None:
    """The node's cache as configured (``plaintext_cache_*``), or None when it is off. ``budget`` -1: automatic.
    The default directory, ``/dev/shm/soko-<uid>/<deployment id>`` (the id derived from ``deployment_key``, so
    deployments on one machine never share entries), is used only where ``/dev/shm`` is a tmpfs; an explicit one
    that is not memory is refused (``CacheRefused``) unless ``allow_disk``. The default one is shared ground: when
    another local user has made it unsafe (``/dev/shm/soko-<uid>`` theirs, or a link), the node runs without the
    cache and says why, instead of letting that user keep Soko from starting."""
    if budget == 0:
        return None
    if budget < 0:
        budget = auto_budget()
    if directory:
        return PlainCache.open(directory, budget, allow_disk=allow_disk)
    if filesystem_type(shm) not in TMPFS_TYPES or not os.path.isdir(shm):
        log.warning("plaintext cache off: %s is not a tmpfs here; set plaintext_cache_dir to one", shm)
        return None
    deployment = hashlib.sha256(b"soko/plaintext-cache\0" + deployment_key).hexdigest()[:16]
    parent = os.path.join(shm, f"soko-{os.getuid()}")
    try:
        _private_dir(parent)
        sweep_abandoned(parent, keep=deployment)
        return PlainCache.open(os.path.join(parent, deployment), budget, allow_disk=allow_disk)
    except CacheRefused as exc:
        log.warning(
            "plaintext cache off (pulls of encrypted blobs decrypt every time): %s. Remove it, or set "
            "plaintext_cache_dir to a private tmpfs directory",
            exc,
        )
        return None


def sweep_abandoned(parent: str, keep: str, settle: float = 60.0) -> None:
    """Remove the directories of deployments no process on this node serves any more (servers killed with SIGKILL,
    test servers): their plaintext would otherwise stay in memory until the next reboot. A directory is abandoned
    when nobody holds its ``.alive`` lock and that file is older than ``settle`` seconds (a server starting right
    now creates and locks it at once)."""
    with contextlib.suppress(OSError), os.scandir(parent) as found:
        for item in found:
            if item.name == keep or not item.is_dir(follow_symlinks=False):
                continue
            alive = os.path.join(item.path, ".alive")
            try:
                if time.time() - os.lstat(alive).st_mtime < settle:
                    continue
                fd = os.open(alive, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # Removed under the lock: a server of that deployment (re)starting now waits for it, then sees its
                # .alive gone and makes the directory anew (an .alive file keeps its old time when reopened).
                shutil.rmtree(item.path, ignore_errors=True)
            except BlockingIOError:
                continue
            finally:
                os.close(fd)
