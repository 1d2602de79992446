"""Settings from (in increasing precedence) defaults, a TOML config file, SOKO_* environment variables, and flags.

Config file keys are the field names below (e.g. ``listen = "0.0.0.0:5000"``, ``upload_expiry = "24h"``); the file
is ``--config PATH`` or ``SOKO_CONFIG``. Every field has an env var ``SOKO_<FIELD>`` (upper case).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(value: str | int | float) -> float:
    """'24h', '90m', '1d12h', '0s' or a number of seconds → seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    match = _DURATION.fullmatch(text)
    if not text or not match:
        raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 15m, 24h, 7d")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(days * 86400 + hours * 3600 + minutes * 60 + seconds)


def parse_size(value: str | int) -> int:
    """'10GB', '4MiB', '512' → bytes (decimal and binary units)."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]i?B?|B)?\s*", value, re.IGNORECASE)
    if not match:
        raise ValueError(f"invalid size {value!r}: use e.g. 512MB, 10GB, 4MiB")
    number, unit = int(match.group(1)), (match.group(2) or "B").upper()
    powers = {"K": 1, "M": 2, "G": 3, "T": 4}
    if unit == "B":
        return number
    base = 1024 if "I" in unit else 1000
    return number * base ** powers[unit[0]]


@dataclass
class Settings:
    listen: str = "127.0.0.1:5000"
    data_dir: str = "./soko-data"
    database_url: str = ""  # default: SQLite in the data dir
    keepalive_timeout: float = 120.0  # idle wait for the next request head; above clients' and proxies' pool expiry
    storage_url: str = ""  # default: file://<data-dir>/storage; s3://bucket/prefix?endpoint_url=… for many nodes
    # The archive storage class's store (file:///path or s3://…): where archived images' content goes, so archiving
    # frees standard storage. Default: the same store as storage_url, under its own prefix (archive/).
    archive_storage_url: str = ""
    # Blob GETs answer 307 to a presigned object-store URL (S3 only; clients must reach the store's endpoint).
    storage_redirect: bool = False
    storage_redirect_expiry: float = 20 * 60
    workers: int = 1
    region: str = "us-east-1"
    account_id: str = "000000000000"
    # Uploads untouched for this long are abandoned; their data is reclaimed.
    upload_expiry: float = 24 * 3600
    # How long an unreferenced blob link survives before garbage collection may delete it (covers in-flight pushes).
    gc_grace_period: float = 24 * 3600
    # How often each node runs the garbage collector (0 disables the automatic runs).
    gc_interval: float = 3600
    # How often each node applies lifecycle policies (0 disables the automatic runs; `soko lifecycle run` still works).
    lifecycle_interval: float = 3600
    # Image scans one process runs at once (each on a thread of lower CPU priority, so pulls stay fast); 0: this
    # node runs none (other nodes of the cluster do; queued scans wait for one).
    scan_concurrency: int = 1
    max_manifest_size: int = 4 * 1024 * 1024
    # ECR's image-size quota, enforced on every blob while it uploads and on each image's total at manifest push.
    max_image_size: int = 10 * 1000**3
    # A push to a missing repository that no CREATE_ON_PUSH creation template matches creates it with defaults
    # (like Distribution); False answers RepositoryNotFound / NAME_UNKNOWN (like ECR).
    create_repository_on_push: bool = True
    # ECR's quota of repositories per account per region (CreateRepository and create-on-push → LimitExceeded).
    max_repositories: int = 10_000
    # Open (unfinished) upload sessions one principal may hold in one repository: abandoned sessions cost a row and
    # a directory each until upload_expiry; past this, starting another is refused (LimitExceeded / 429).
    max_open_uploads: int = 1000
    log_level: str = "info"
    # One JSON line per request: "stderr", a file path (appended to), or "off" (soko.http.access_log).
    access_log: str = "stderr"
    # Identity. The default account's root key comes from these, or is generated at first start.
    root_access_key_id: str = ""
    root_secret_access_key: str = ""
    # base64 of 32 bytes; encrypts stored secrets and signs ECR tokens. Default: <data-dir>/master.key (generated).
    # Nodes sharing one database must share it.
    master_key: str = ""
    # Registries answer as <account>.dkr.ecr.<region>.<domain>; the bare host serves the caller's own account.
    domain: str = "localhost"
    # Private endpoints: "vpce-0abc1234=127.0.0.2:5000" entries (comma-separated in the env var).
    endpoints: list = field(default_factory=list)
    # How often each node samples stored bytes for GB-month accrual (all nodes must share it; best a divisor of 1d).
    metering_interval: float = 300
    event_retention: float = 7 * 24 * 3600  # events outbox rows older than this are pruned hourly (0: keep all)
    # Deliver registry events (the outbox each change writes) to webhook targets (soko.events). False: no delivery;
    # targets keep their place and catch up when it is switched back on (within event_retention).
    events_enabled: bool = True
    # A webhook's failed delivery is retried after event_retry_base, doubling up to event_retry_max.
    event_retry_base: float = 2.0
    event_retry_max: float = 600.0
    # Webhook targets may not reach loopback, link-local (cloud metadata), multicast or unspecified addresses
    # (SSRF); these networks (CIDRs) are allowed all the same, e.g. "127.0.0.1/32" for a receiver on this host.
    event_target_allow_cidrs: list = field(default_factory=list)
    # Storage price in USD per GB-month (GB = 2^30 bytes) for `soko usage`.
    price_storage_gb_month: float = 0.10
    # Archived content's price per GB-month (ECR us-east-1: $0.10 for the first 150 TB, as standard; $0.07 beyond);
    # ECR bills archived images for at least 90 days (see soko.metering).
    price_archive_gb_month: float = 0.10
    # Refuse lifecycle policies ECR would refuse (Soko's extension, sinceImagePulled with expire), so a policy
    # tested on Soko applies unchanged on ECR.
    lifecycle_ecr_strict: bool = False
    # Source CIDRs whose traffic on the public listener is same-region (free), e.g. "10.0.0.0/8,172.16.0.0/12".
    same_region_cidrs: list = field(default_factory=list)
    # TLS on every listener: PEM certificate (chain) and unencrypted PEM key (not readable by other users). Both
    # files are re-read when they change (checked every tls_reload_interval), without a restart.
    tls_cert: str = ""
    tls_key: str = ""
    tls_reload_interval: float = 10.0
    # Proxies (CIDRs) whose X-Forwarded-Proto/-For/-Host Soko believes; from anyone else those headers are ignored.
    trusted_proxies: list = field(default_factory=list)
    # Other regions replication can reach: other Soko deployments, each with a key of a principal of each destination
    # account there (README, "Replication"): {"eu-west-1": {"url": "https://…", "accounts": {"222222222222":
    # {"access_key_id": "AKIA…", "secret_access_key_file": "/etc/soko/eu-west-1.key"}}}} (TOML tables; env: JSON).
    regions: dict = field(default_factory=dict)
    # Networks allowed to scrape GET /metrics (its figures name repositories).
    metrics_allow_cidrs: list = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # The web console at /console/ on every listener (false: /console/ answers 404 and no session is accepted).
    console: bool = True
    # A console session ends after this long without a request, and in any case this long after sign-in.
    console_idle_timeout: float = 30 * 60
    console_session_lifetime: float = 12 * 3600
    # Pull-through caches: a cached tag is checked against its upstream at most this often (ECR: 24 h); meanwhile,
    # and whenever the upstream is down or rate-limits, it is served from the cache.
    pull_through_recheck: float = 24 * 3600
    # Longest wait for an upstream registry (connect, and between bytes of an answer).
    pull_through_timeout: float = 30.0
    # The plaintext blob cache (soko.storage.plain_cache): decrypted blobs kept in memory (tmpfs), shared by the
    # workers of a node, so warm pulls and the first pull after a push are sent from a local file. Bytes per node:
    # "auto" = min(2 GiB, 1/8 of memory); 0 turns it off.
    plaintext_cache_bytes: int = -1
    # Default /dev/shm/soko-<uid>/<deployment id>; refused unless tmpfs or ramfs (plaintext must not reach a disk),
    # unless plaintext_cache_allow_disk says this filesystem is memory all the same.
    plaintext_cache_dir: str = ""
    plaintext_cache_allow_disk: bool = False
    # Also cache the content of KMS and KMS_DSSE repositories (their key is still checked, and KMS Decrypt called
    # and audited, on every pull; entries go when the key is disabled or scheduled for deletion).
    plaintext_cache_kms: bool = False
    # Fill the cache as blobs are pushed (a CI push followed by a deploy's pull reads memory); costs the push one
    # copy into fresh memory pages (docs/performance.md). False: the first whole pull fills it instead.
    plaintext_cache_on_push: bool = True
    # The data listener (soko.http.data_listener): plain-HTTP HOST:PORT on which layer downloads are sent with
    # sendfile(2). /v2/ blob GETs of at least data_redirect_min_bytes whose plaintext is cached answer 307 to a
    # presigned URL there (as ECR sends layer downloads to S3), and GetDownloadUrlForLayer hands out URLs there.
    # Clients must reach it: default URL http://<the request's host name>:<its port>, or data_url. Empty: off.
    data_listen: str = ""
    # e.g. http://registry.internal:5001 (behind a proxy or NAT); https clients are redirected only to an https
    # data_url (a TLS terminator in front of the data listener), never to plain text
    data_url: str = ""
    data_redirect_min_bytes: int = 4 << 20

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{os.path.abspath(os.path.join(self.data_dir, 'metadata.db'))}"

    @property
    def blob_root(self) -> str:
        return os.path.join(self.data_dir, "storage")


_CONVERTERS: dict[str, Callable[[Any], object]] = {
    "upload_expiry": parse_duration,
    "keepalive_timeout": parse_duration,
    "storage_redirect_expiry": parse_duration,
    "gc_grace_period": parse_duration,
    "gc_interval": parse_duration,
    "lifecycle_interval": parse_duration,
    "metering_interval": parse_duration,
    "event_retention": parse_duration,
    "event_retry_base": parse_duration,
    "event_retry_max": parse_duration,
    "tls_reload_interval": parse_duration,
    "console_idle_timeout": parse_duration,
    "console_session_lifetime": parse_duration,
    "pull_through_recheck": parse_duration,
    "pull_through_timeout": parse_duration,
    "price_storage_gb_month": float,
    "price_archive_gb_month": float,
    "max_manifest_size": parse_size,
    "max_image_size": parse_size,
    "data_redirect_min_bytes": parse_size,
    "plaintext_cache_bytes": lambda v: -1 if str(v).strip().lower() in ("auto", "-1") else parse_size(v),
}

# Durations a zero would not switch off but break: a timeout of 0 closes every connection at once, a reload check
# every 0 s spins. Refused at start rather than quietly replaced.
_POSITIVE = (
    "keepalive_timeout",
    "tls_reload_interval",
    "event_retry_base",
    "event_retry_max",
    "console_idle_timeout",
    "console_session_lifetime",
    "pull_through_timeout",
)


def _convert(name: str, raw: Any, target: type | str) -> Any:
    """``raw`` as read from TOML, YAML or the environment, as the setting's type."""
    if name in _CONVERTERS:
        return _CONVERTERS[name](raw)
    kind = target if isinstance(target, str) else target.__name__
    if kind == "list":
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return [item.strip() for item in items if str(item).strip()]
    if kind == "bool" and isinstance(raw, str):
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"{name}: expected true or false, got {raw!r}")
        return raw.lower() in ("1", "true", "yes", "on")
    if kind == "int":
        return int(raw)
    if kind == "dict":
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}: not a JSON object ({exc.msg} at character {exc.pos})") from None
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a table (TOML) or a JSON object")
        return value
    return raw


def load_settings(config_file: str | None = None, overrides: dict | None = None, env=os.environ) -> Settings:
    values: dict[str, object] = {}
    path = config_file or env.get("SOKO_CONFIG")
    if path:
        with open(path, "rb") as f:
            values.update(tomllib.load(f))
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for name in fields:
        env_value = env.get(f"SOKO_{name.upper()}")
        if env_value is not None:
            values[name] = env_value
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    unknown = sorted(k for k in values if k not in fields)
    if unknown:
        # A setting Soko does not know would be accepted and then do nothing (a typo in tls_cert, or a key a
        # newer or older version had): refuse it, naming it.
        hints = {"endpoint_vpcs": " (removed: it never set aws:SourceVpc; private endpoints carry aws:SourceVpce)"}
        raise ValueError(
            f"unknown setting(s) in {path or 'the configuration'}: "
            + ", ".join(f"{k}{hints.get(k, '')}" for k in unknown)
            + "; see the README's settings table"
        )
    known = {k: _convert(k, v, fields[k].type) for k, v in values.items()}
    for name in _POSITIVE:
        if name in known and not known[name] > 0:
            raise ValueError(f"{name}: must be more than zero, got {values[name]!r}")
    settings = Settings(**known)
    if settings.scan_concurrency < 0:
        raise ValueError(f"scan_concurrency: must be 0 or more, got {values['scan_concurrency']!r}")
    check_regions(settings.regions, settings.region)
    check_data_listener(settings)
    return settings


def check_data_listener(settings: Settings) -> None:
    """data_listen and data_url, refused at start when malformed."""
    from urllib.parse import urlsplit

    if settings.data_listen:
        _, sep, port = settings.data_listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"data_listen: {settings.data_listen!r} is not HOST:PORT, e.g. 0.0.0.0:5001")
        if settings.data_listen == settings.listen:
            raise ValueError("data_listen: must be another port than listen")
    if settings.data_url:
        if not settings.data_listen:
            raise ValueError("data_url: set data_listen too (the data listener it names)")
        parts = urlsplit(settings.data_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"data_url: expected the data listener's base URL, http://host[:port], got "
                             f"{settings.data_url[:100]!r}")
    if settings.data_redirect_min_bytes < 0:
        raise ValueError("data_redirect_min_bytes: must be 0 or more")


_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")


def check_regions(regions: dict, own: str) -> None:
    """The ``regions`` setting, refused at start when malformed, naming what is wrong (never a secret)."""
    import stat
    from urllib.parse import urlsplit

    for region, entry in regions.items():
        where = f"regions.{region}"
        if not isinstance(region, str) or not _REGION.fullmatch(region):
            raise ValueError(f"regions: {str(region)[:40]!r} is not a region name (e.g. eu-west-1)")
        if region == own:
            raise ValueError(f"{where}: this deployment serves {own} itself; list only other regions")
        if not isinstance(entry, dict) or set(entry) - {"url", "accounts", "tls_verify"}:
            raise ValueError(f"{where}: expected url, accounts and optionally tls_verify")
        url = entry.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"{where}.url: expected the other deployment's base URL, https://host[:port]")
        if "tls_verify" in entry and not isinstance(entry["tls_verify"], (bool, str)):
            raise ValueError(f"{where}.tls_verify: expected true, false or a CA bundle path")
        accounts = entry.get("accounts")
        if not isinstance(accounts, dict) or not accounts:
            raise ValueError(f"{where}.accounts: expected one table per destination account id")
        for account, key in accounts.items():
            at = f"{where}.accounts.{str(account)[:20]}"
            if not isinstance(account, str) or not re.fullmatch(r"\d{12}", account):
                raise ValueError(f"{at}: an account id has 12 digits")
            if not isinstance(key, dict) or set(key) != {"access_key_id", "secret_access_key_file"}:
                raise ValueError(f"{at}: expected access_key_id and secret_access_key_file")
            if not isinstance(key["access_key_id"], str) or not _KEY_ID.fullmatch(key["access_key_id"]):
                raise ValueError(f"{at}.access_key_id: not an access key id")
            path = key["secret_access_key_file"]
            if not isinstance(path, str) or not os.path.isfile(path):
                raise ValueError(f"{at}.secret_access_key_file: no such file")
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                raise ValueError(
                    f"{at}.secret_access_key_file: {path} is open to other users (mode {mode:04o}); chmod 600 it"
                )
