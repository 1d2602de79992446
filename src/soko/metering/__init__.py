"""Storage and transfer metering, the cost report (``soko usage``) and the Prometheus metrics (``GET /metrics``).

Design — every figure is exact, because the ones that can drift are never kept as counters:

* **Stored bytes are computed, never counted.** They are read from the metadata database (the single source of
  truth) on demand, in one snapshot:

  - per repository, *logical* = Σ size of the blobs linked to the repository + Σ its manifests' payload bytes;
  - per account, *physical* (deduplicated) = Σ size of the DISTINCT blobs linked by any of the account's
    repositories + its manifests' bytes (manifests live in the database, one row per repository);
  - per repository, *physical* = its share of the account's physical bytes: each blob's size is split evenly
    among the account's repositories linking it (remainder bytes to the lowest repository ids), so the shares
    add up exactly to the account's figure and a repository's cost never double-counts a shared layer;
  - registry-wide, physical = Σ blobs (+ Σ manifest bytes, reported apart).

  Deletes, garbage collection and dedup change the rows these sums read, so the figures follow them by
  construction (Harbor's quota counters drift; there is nothing here to drift). A blob stays counted while a
  repository still links it — after a manifest delete, until GC removes the unreferenced link.
* **GB-month accrual.** A sampler (a background task in every serving process, every ``metering_interval``,
  default 300 s) writes one ``usage_samples`` row per non-empty repository per time slot. The row's key is
  (account, repository, slot start), written insert-ignore, so any number of processes and nodes may sample the
  same slot: the first wins, the rest are no-ops. GB-months for a month = Σ bytes x slot seconds /
  (2^30 x hours in that month x 3600) — AWS's TimedStorage-ByteHrs converted the way AWS bills them. Samples
  have no foreign key: a deleted repository keeps what it accrued. A slot that nobody sampled (the registry was
  down) accrues nothing; all nodes must use the same interval, ideally one that divides a day so that no slot
  straddles two months (a slot belongs to the month it starts in).
* **Transfer and requests.** ``record_transfer`` is called on the request path (blob GET/HEAD, manifest
  GET/HEAD/PUT); it updates an in-memory dict under a lock (about a microsecond). Each process flushes its
  counts every ~10 s (and at shutdown) into ``transfer_usage``, keyed by account, repository, endpoint
  ("public" or the VPC endpoint id the request came in on), network (internet, same-region — a public-listener
  request from ``same_region_cidrs`` — or private), operation and UTC day, with an upsert that *adds*
  (``ON CONFLICT DO UPDATE SET bytes_out = bytes_out + excluded.bytes_out``), so processes never overwrite each
  other. A blob GET counts the body bytes it sends (a Range request's range length), or, when it redirects to
  the object store, the bytes the client will fetch there; HEADs send no body and count as requests only. A GET
  redirected to the data listener counts nothing itself: each download of a presigned layer URL counts once, the
  bytes that went out, when it ends (``soko.oci.presigned``).
* **Cost report** (``soko.metering.report``): storage at ``price_storage_gb_month`` per GB-month of physical
  bytes; internet transfer at AWS's public tiers per account and month (``pricing.INTERNET_TIERS``, each
  repository carrying its pro-rata share); private-endpoint and same-region transfer free.
* **Prometheus** (``soko.http.metrics``): a collector reading the same figures at scrape time (plus this
  process's unflushed counts), cached for a few seconds.
"""

from soko.metering.service import Metering

__all__ = ["Metering"]
