"""The keys Soko signs with, managed like its other secrets: private keys sealed by the master key (AES-256-GCM,
what they belong to bound as associated data, so a row cannot be moved to another profile), never logged.

Each account has one signing authority: a self-signed root certificate (ECDSA P-384), the trust anchor users give
``notation`` (``soko signing trust-store``). Each signing profile has leaf keys issued by it, one row per version,
with the Notary Project's notary.x509 requirements (digitalSignature, codeSigning, not a CA). Rotation adds a version
with the same subject: new signatures use it, and old ones keep verifying because they chain to the same root (a
trust policy names the root and the subject, neither of which rotation changes). Keys are ECDSA P-384 signing
SHA-384 (JWS ``ES384``), the algorithm of AWS Signer's Notation-OCI-SHA384-ECDSA platform that ECR uses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from soko.errors import SokoError
from soko.iam.secrets import MasterKey
from soko.kernel.context import DomainContext
from soko.meta.schema import signing_authorities, signing_keys

ROOT_VALIDITY = dt.timedelta(days=20 * 365)
LEAF_VALIDITY = dt.timedelta(days=10 * 365)  # a signature without a timestamp verifies while its chain is valid
ORGANIZATION = "Soko"


class SigningKeyMissing(SokoError):
    """No key for the profile (its configuration was never put)."""


@dataclass(frozen=True)
class SigningKey:
    profile_arn: str
    version: int
    private_key: ec.EllipticCurvePrivateKey
    chain: list[x509.Certificate]  # leaf first, then the root


def profile_name(profile_arn: str) -> str:
    return profile_arn.rsplit("/", 1)[-1]


def subject_for(account_id: str, profile_arn: str) -> x509.Name:
    """The leaf's subject, the same for every version: what a notation trust policy's trustedIdentities names."""
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, profile_name(profile_arn)),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, account_id),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
    ])


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class SigningKeys:
    def __init__(self, ctx: DomainContext, master: MasterKey) -> None:
        self.ctx = ctx
        self.master = master

    # ---- sealing ------------------------------------------------------------------------------------------------
    @staticmethod
    def _authority_context(account_id: str) -> str:
        return f"soko/signing-authority/{account_id}"

    @staticmethod
    def _key_context(account_id: str, profile_arn: str, version: int) -> str:
        return f"soko/signing-key/{account_id}/{profile_arn}/{version}"

    def _open_key(self, sealed: bytes, context: str) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.master.decrypt(sealed, context).encode(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.ctx.clock(), dt.UTC)

    # ---- the account's authority ---------------------------------------------------------------------------------
    def _authority(self, conn: sa.Connection, account_id: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The account's root (made on first use; a concurrent maker's row wins)."""
        t = signing_authorities.c
        row = conn.execute(sa.select(t.private_key, t.certificate).where(t.account_id == account_id)).first()
        if row is None:
            key = ec.generate_private_key(ec.SECP384R1())
            name = x509.Name([
                x509.NameAttribute(NameOID.COMMON_NAME, f"Soko signing authority {account_id}"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, account_id),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            ])
            now = self._now()
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + ROOT_VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA384())
            )
            conn.execute(self.ctx.db.insert_ignore(signing_authorities).values(
                account_id=account_id,
                private_key=self.master.encrypt(_pem(key), self._authority_context(account_id)),
                certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
                created_at=self.ctx.clock(),
            ))
            row = conn.execute(sa.select(t.private_key, t.certificate).where(t.account_id == account_id)).one()
        return (self._open_key(row.private_key, self._authority_context(account_id)),
                x509.load_pem_x509_certificate(row.certificate.encode()))

    def trust_store(self, account_id: str) -> str:
        """The account's root certificate (PEM), made if missing: ``notation cert add --type ca``."""
        with self.ctx.write() as conn:
            _key, cert = self._authority(conn, account_id)
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    # ---- profile keys ---------------------------------------------------------------------------------------------
    def _issue(self, conn: sa.Connection, account_id: str, profile_arn: str, version: int) -> None:
        root_key, root = self._authority(conn, account_id)
        key = ec.generate_private_key(ec.SECP384R1())
        now = self._now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject_for(account_id, profile_arn))
            .issuer_name(root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + LEAF_VALIDITY, root.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA384())
        )
        conn.execute(sa.insert(signing_keys).values(  # (under _serialize: a clash is a bug, not a no-op)
            account_id=account_id,
            profile_arn=profile_arn,
            version=version,
            private_key=self.master.encrypt(_pem(key), self._key_context(account_id, profile_arn, version)),
            certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
            created_at=self.ctx.clock(),
        ))

    def _newest_version(self, conn: sa.Connection, account_id: str, profile_arn: str) -> int:
        t = signing_keys.c
        return conn.execute(
            sa.select(sa.func.max(t.version)).where(t.account_id == account_id, t.profile_arn == profile_arn)
        ).scalar() or 0

    def _serialize(self, conn: sa.Connection, account_id: str, profile_arn: str) -> None:
        """On PostgreSQL, one writer of a profile's keys at a time, to its commit: two rotations that both read the
        newest version would both make the next one (SQLite writers are serial already)."""
        self.ctx.db.serialize(conn, f"signing/{account_id}/{profile_arn}")

    def ensure(self, conn: sa.Connection, account_id: str, profile_arn: str) -> None:
        """A key for the profile, in the caller's transaction (version 1 when it has none)."""
        self._serialize(conn, account_id, profile_arn)
        if not self._newest_version(conn, account_id, profile_arn):
            self._issue(conn, account_id, profile_arn, 1)

    def rotate(self, account_id: str, profile_arn: str) -> int:
        """A new key version for the profile (new signatures use it); returns its number. Concurrent rotations
        each add one, in turn."""
        with self.ctx.write() as conn:
            self._serialize(conn, account_id, profile_arn)
            version = self._newest_version(conn, account_id, profile_arn) + 1
            self._issue(conn, account_id, profile_arn, version)
        return version

    def current(self, account_id: str, profile_arn: str) -> SigningKey:
        """The profile's newest key with its certificate chain."""
        t = signing_keys.c
        with self.ctx.db.read() as conn:
            row = conn.execute(
                sa.select(t.version, t.private_key, t.certificate)
                .where(t.account_id == account_id, t.profile_arn == profile_arn)
                .order_by(t.version.desc())
                .limit(1)
            ).first()
            root = conn.execute(sa.select(signing_authorities.c.certificate)
                                .where(signing_authorities.c.account_id == account_id)).scalar()
        if row is None or root is None:
            raise SigningKeyMissing(f"Soko holds no signing key for the signing profile {profile_arn}")
        key = self._open_key(row.private_key, self._key_context(account_id, profile_arn, row.version))
        chain = [x509.load_pem_x509_certificate(pem.encode()) for pem in (row.certificate, root)]
        return SigningKey(profile_arn, row.version, key, chain)

    def certificates(self, account_id: str) -> list[tuple[str, int, str]]:
        """(profile, version, certificate PEM) of every key of the account, oldest first."""
        t = signing_keys.c
        with self.ctx.db.read() as conn:
            rows = conn.execute(sa.select(t.profile_arn, t.version, t.certificate)
                                .where(t.account_id == account_id).order_by(t.profile_arn, t.version)).all()
        return [(r.profile_arn, r.version, r.certificate) for r in rows]
