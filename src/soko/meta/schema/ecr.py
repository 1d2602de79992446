"""ECR control-plane state that is not registry content: resource tags, lifecycle policies and their previews,
repository-creation templates, replication and scanning configuration."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import Id, Timestamp, metadata

repository_tags = sa.Table(
    "repository_tags",
    metadata,
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

lifecycle_policies = sa.Table(
    "lifecycle_policies",
    metadata,
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("policy_text", sa.Text, nullable=False),
    sa.Column("last_evaluated_at", Timestamp, nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
)

# One preview per repository (ECR: LifecyclePolicyPreviewInProgressException while one runs).
lifecycle_previews = sa.Table(
    "lifecycle_previews",
    metadata,
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # IN_PROGRESS | COMPLETE | EXPIRED | FAILED
    sa.Column("policy_text", sa.Text, nullable=False),
    sa.Column("results", sa.Text, nullable=True),  # JSON list of preview results
    sa.Column("failure", sa.Text, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

creation_templates = sa.Table(
    "creation_templates",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("prefix", sa.String(256), primary_key=True),  # "ROOT" matches every repository
    sa.Column("description", sa.String(256), nullable=True),
    sa.Column("applied_for", sa.Text, nullable=False),  # JSON list: REPLICATION | PULL_THROUGH_CACHE | CREATE_ON_PUSH
    sa.Column("encryption_type", sa.String(16), nullable=False, server_default="AES256"),
    sa.Column("kms_key", sa.String(2048), nullable=True),
    sa.Column("resource_tags", sa.Text, nullable=True),  # JSON list of {"Key","Value"}
    sa.Column("tag_mutability", sa.String(32), nullable=False, server_default="MUTABLE"),
    sa.Column("tag_mutability_filters", sa.Text, nullable=True),
    sa.Column("repository_policy", sa.Text, nullable=True),
    sa.Column("lifecycle_policy", sa.Text, nullable=True),
    sa.Column("custom_role_arn", sa.String(2048), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

replication_configurations = sa.Table(
    "replication_configurations",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("rules", sa.Text, nullable=False),  # JSON, as PutReplicationConfiguration received it
    sa.Column("updated_at", Timestamp, nullable=False),
)

scanning_configurations = sa.Table(
    "scanning_configurations",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("scan_type", sa.String(16), nullable=False, server_default="BASIC"),
    sa.Column("rules", sa.Text, nullable=False),  # JSON
    sa.Column("updated_at", Timestamp, nullable=False),
)
