"""Pull-through cache state: the rules, the secrets holding upstream credentials (Secrets Manager's subset, values
encrypted with the master key), each cached tag's last check against its upstream, manifests fetched before their
blobs were (promoted once the blobs are in), and the claims that make one process fetch an uncached blob."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import Id, Timestamp, metadata

pull_through_rules = sa.Table(
    "pull_through_rules",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("prefix", sa.String(30), primary_key=True),  # ecrRepositoryPrefix ("ROOT": every repository)
    sa.Column("upstream_registry_url", sa.String(512), nullable=False),
    sa.Column("upstream_registry", sa.String(64), nullable=True),
    sa.Column("upstream_repository_prefix", sa.String(256), nullable=False, server_default="ROOT"),
    sa.Column("credential_arn", sa.String(612), nullable=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

secrets = sa.Table(
    "secrets",
    metadata,
    sa.Column("arn", sa.String(2048), primary_key=True),
    sa.Column("account_id", sa.String(12), nullable=False),
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("description", sa.String(2048), nullable=True),
    sa.Column("version_id", sa.String(64), nullable=False),
    sa.Column("value", sa.LargeBinary, nullable=False),  # MasterKey.encrypt(json {"s"|"b": …}, context=arn)
    sa.Column("previous_version_id", sa.String(64), nullable=True),
    sa.Column("previous_value", sa.LargeBinary, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("deleted_at", Timestamp, nullable=True),  # scheduled deletion (DeletionDate)
    sa.Index("ix_secrets_account_name", "account_id", "name", unique=True),  # a name is one secret (0031)
)

pull_through_tags = sa.Table(
    "pull_through_tags",
    metadata,
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag", sa.String(300), primary_key=True),
    sa.Column("digest", sa.String(200), nullable=False),
    sa.Column("checked_at", Timestamp, nullable=False),
)

pull_through_pending = sa.Table(
    "pull_through_pending",
    metadata,
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("tag", sa.String(300), nullable=True),
    sa.Column("media_type", sa.String(255), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

pull_through_fetches = sa.Table(
    "pull_through_fetches",
    metadata,
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("heartbeat", Timestamp, nullable=False),
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
)
