"""Table definitions, one module per concern; all share one MetaData so Alembic sees the whole schema."""

from soko.meta.schema.audit import audit_events
from soko.meta.schema.base import metadata
from soko.meta.schema.blobs import account_keys, blob_copies, blob_keys, blobs, keyspace_keys, repository_blobs
from soko.meta.schema.console import console_sessions
from soko.meta.schema.ecr import (
    creation_templates,
    lifecycle_policies,
    lifecycle_previews,
    replication_configurations,
    repository_tags,
    scanning_configurations,
)
from soko.meta.schema.events import event_dead_letters, event_outbox, event_targets
from soko.meta.schema.gc import gc_link_reviews, gc_tombstones
from soko.meta.schema.identity import (
    access_keys,
    accounts,
    iam_roles,
    iam_tags,
    iam_users,
    inline_policies,
    managed_policies,
    policy_attachments,
    sts_sessions,
)
from soko.meta.schema.jobs import jobs
from soko.meta.schema.kms import kms_aliases, kms_key_material, kms_key_tags, kms_keys
from soko.meta.schema.manifests import manifest_blobs, manifest_children, manifests, tags
from soko.meta.schema.metering import archive_charges, transfer_usage, usage_samples
from soko.meta.schema.policies import account_settings, registry_policies
from soko.meta.schema.pullthrough import (
    pull_through_fetches,
    pull_through_pending,
    pull_through_rules,
    pull_through_tags,
    secrets,
)
from soko.meta.schema.replication import (
    replication_backfill_items,
    replication_backfills,
    replication_cursor,
    replication_outbox,
    replication_status,
)
from soko.meta.schema.repositories import repositories
from soko.meta.schema.scan import advisories, advisory_packages, image_inventories, image_scans
from soko.meta.schema.signing import image_signing_status, signing_authorities, signing_configurations, signing_keys
from soko.meta.schema.uploads import uploads

__all__ = [
    "access_keys",
    "account_keys",
    "account_settings",
    "accounts",
    "advisories",
    "advisory_packages",
    "archive_charges",
    "audit_events",
    "blob_copies",
    "blob_keys",
    "blobs",
    "console_sessions",
    "creation_templates",
    "event_dead_letters",
    "event_outbox",
    "event_targets",
    "gc_link_reviews",
    "gc_tombstones",
    "iam_roles",
    "iam_tags",
    "iam_users",
    "image_inventories",
    "image_scans",
    "image_signing_status",
    "inline_policies",
    "jobs",
    "keyspace_keys",
    "kms_aliases",
    "kms_key_material",
    "kms_key_tags",
    "kms_keys",
    "lifecycle_policies",
    "lifecycle_previews",
    "managed_policies",
    "manifest_blobs",
    "manifest_children",
    "manifests",
    "metadata",
    "policy_attachments",
    "pull_through_fetches",
    "pull_through_pending",
    "pull_through_rules",
    "pull_through_tags",
    "registry_policies",
    "replication_backfill_items",
    "replication_backfills",
    "replication_configurations",
    "replication_cursor",
    "replication_outbox",
    "replication_status",
    "repositories",
    "repository_blobs",
    "repository_tags",
    "scanning_configurations",
    "secrets",
    "signing_authorities",
    "signing_configurations",
    "signing_keys",
    "sts_sessions",
    "tags",
    "transfer_usage",
    "uploads",
    "usage_samples",
]
