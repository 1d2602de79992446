"""ECR managed signing (``soko.signing``): the account's signing configuration, the keys Soko signs with, and each
image's signing status.

``signing_authorities``: one root certificate authority per account (its private key sealed with the master key),
the trust anchor users put in notation's trust store. ``signing_keys``: per signing profile, one row per key
version (a leaf certificate the root issued; private key sealed, ``<account>/<profile>/<version>`` as associated
data); rotation adds a version and new signatures use the newest, while signatures made with an older one keep
verifying, since they chain to the same root. ``image_signing_status``: what DescribeImageSigningStatus answers, one
row per image and signing profile its push matched, and the key of the one-shot ``signing`` job that signs it.
"""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import DIGEST_LENGTH, Id, Timestamp, metadata

signing_configurations = sa.Table(
    "signing_configurations",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("rules", sa.Text, nullable=False),  # JSON: ECR's SigningConfiguration rules, as validated
    sa.Column("updated_at", Timestamp, nullable=False),
)

signing_authorities = sa.Table(
    "signing_authorities",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("private_key", sa.LargeBinary, nullable=False),  # PKCS#8 PEM sealed by the master key
    sa.Column("certificate", sa.Text, nullable=False),  # PEM
    sa.Column("created_at", Timestamp, nullable=False),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(12), nullable=False),
    sa.Column("profile_arn", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("private_key", sa.LargeBinary, nullable=False),  # PKCS#8 PEM sealed by the master key
    sa.Column("certificate", sa.Text, nullable=False),  # PEM, issued by the account's signing authority
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("account_id", "profile_arn", "version"),
)

image_signing_status = sa.Table(
    "image_signing_status",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    sa.Column("manifest_digest", sa.String(DIGEST_LENGTH), nullable=False),
    sa.Column("profile_arn", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # IN_PROGRESS | COMPLETE | FAILED
    sa.Column("failure_code", sa.String(64), nullable=True),
    sa.Column("failure_reason", sa.Text, nullable=True),
    sa.Column("signature_digest", sa.String(DIGEST_LENGTH), nullable=True),  # the referrer, once COMPLETE
    sa.Column("requested_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("repository_id", "manifest_digest", "profile_arn"),
)
