"""A Notary Project (notation) signature verifier for the tests, written from the specification, not from Soko's code:
the JWS is checked by joserfc (an independent JOSE implementation, which refuses a ``crit`` header it was not told
it understands, as RFC 7515 requires), the certificate chain and the notary.x509 certificate requirements with
``cryptography``. What ``notation verify`` checks for a signature of scheme notary.x509 without a timestamp:
the signature manifest (artifact type, the envelope layer, the chain thumbprints annotation), the envelope's
integrity against the leaf certificate, the chain up to a root in the trust store, each certificate valid now, and
the signed payload naming exactly the artifact being verified. (The notation CLI is not in Debian and cannot be
fetched here.)"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from joserfc import jws
from joserfc.jwk import ECKey
from joserfc.registry import HeaderParameter

ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
NOTARY_HEADERS = {
    "io.cncf.notary.signingScheme": HeaderParameter("signing scheme", "str", True),
    "io.cncf.notary.signingTime": HeaderParameter("signing time", "str"),
    "io.cncf.notary.expiry": HeaderParameter("expiry", "str"),
    "io.cncf.notary.signingAgent": HeaderParameter("signing agent", "str"),
}


class VerificationFailed(AssertionError):
    pass


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise VerificationFailed(message)


def verify(manifest_bytes: bytes, envelope: bytes, subject: dict, trust_store_pem: str,
           now: dt.datetime | None = None) -> x509.Certificate:
    """Verify one signature of ``subject`` (its descriptor); returns the leaf certificate that signed it."""
    now = now or dt.datetime.now(dt.UTC)
    manifest = json.loads(manifest_bytes)
    _require(manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json", "not an OCI image manifest")
    _require(manifest["config"]["mediaType"] == ARTIFACT_TYPE, "not a notation signature")
    _require({k: manifest["subject"][k] for k in ("mediaType", "digest", "size")} == subject, "subject differs")
    [layer] = manifest["layers"]
    _require(layer["mediaType"] == "application/jose+json", "not a JWS envelope")
    _require(layer["digest"] == "sha256:" + hashlib.sha256(envelope).hexdigest(), "envelope digest differs")
    document = json.loads(envelope)
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in document["header"]["x5c"]]
    thumbprints = [hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in chain]
    _require(json.loads(manifest["annotations"]["io.cncf.notary.x509chain.thumbprint#S256"]) == thumbprints,
             "thumbprint annotation differs from the chain")

    # the chain: each certificate issued by the next, the last a self-signed root in the trust store
    trusted = {c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(
        trust_store_pem.encode())}
    _require(chain[-1].public_bytes(serialization.Encoding.DER) in trusted, "the root is not in the trust store")
    for child, issuer in zip(chain, chain[1:] + chain[-1:], strict=True):
        child.verify_directly_issued_by(issuer)  # raises on a bad signature or issuer name
        _require(child.not_valid_before_utc <= now <= child.not_valid_after_utc, "a certificate is not valid now")
    for ca in chain[1:]:  # "Root and Intermediate CA Certificates"
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        _require(constraints.critical and constraints.value.ca, "an issuer is not a CA (critical basicConstraints)")
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
        _require(usage.critical and usage.value.key_cert_sign, "an issuer cannot sign certificates")
    leaf = chain[0]  # "Leaf Certificates"
    _require(not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca, "the leaf is a CA")
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    _require(usage.critical and usage.value.digital_signature, "the leaf lacks digitalSignature")
    _require(not (usage.value.key_encipherment or usage.value.data_encipherment or usage.value.key_agreement
                  or usage.value.key_cert_sign or usage.value.crl_sign), "the leaf has a forbidden key usage")
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    _require(ExtendedKeyUsageOID.CODE_SIGNING in eku, "the leaf is not for code signing")
    for forbidden in (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
                      ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE, ExtendedKeyUsageOID.TIME_STAMPING):
        _require(forbidden not in eku, "the leaf has a forbidden extended key usage")

    # the envelope, by joserfc, with the leaf's public key
    key = ECKey.import_key(leaf.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    registry = jws.JWSRegistry(header_registry=NOTARY_HEADERS, algorithms=["ES256", "ES384", "ES512"])
    signed = jws.deserialize_json(document, key, registry=registry)  # raises BadSignatureError
    protected = signed.member.protected  # what the signature covers (not the unprotected header)
    _require(protected["cty"] == "application/vnd.cncf.notary.payload.v1+json", "wrong payload type")
    _require(protected["io.cncf.notary.signingScheme"] == "notary.x509", "wrong signing scheme")
    _require("io.cncf.notary.signingScheme" in protected["crit"], "signing scheme not critical")
    signing_time = dt.datetime.fromisoformat(protected["io.cncf.notary.signingTime"].replace("Z", "+00:00"))
    for cert in chain:  # "valid at signing time"
        _require(cert.not_valid_before_utc <= signing_time <= cert.not_valid_after_utc, "signed outside a validity")
    _require(protected["alg"] == {384: "ES384", 256: "ES256", 521: "ES512"}[leaf.public_key().key_size],
             "alg does not match the signing key")
    target = json.loads(signed.payload)["targetArtifact"]
    _require({k: target[k] for k in ("mediaType", "digest", "size")} == subject, "the payload names another artifact")
    return leaf
