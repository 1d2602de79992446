"""Notary Project signatures (what ``notation verify`` checks), built without I/O.

Why notation and not cosign: ECR's managed signing signs through AWS Signer, which produces Notary Project
signatures, so a client that verifies ECR's signatures (``notation`` with the AWS Signer plugin or a plain trust
store) verifies Soko's the same way; and a notation signature is an OCI 1.1 referrer by design (``subject`` = the
signed manifest, found through the referrers API), with keys and certificates the registry can manage itself, where
cosign's keyless default needs Fulcio and Rekor.

Formats (Notary Project specification v1.1, signature-specification.md and signature-envelope-jws.md):
* the payload ``{"targetArtifact": <descriptor of the signed manifest>}``, media type
  ``application/vnd.cncf.notary.payload.v1+json``;
* the envelope, JWS JSON serialization (flattened, RFC 7515 §7.2.2), media type ``application/jose+json``: protected
  header ``alg`` ES384, ``cty`` the payload type, ``crit`` [``io.cncf.notary.signingScheme``], signing scheme
  ``notary.x509``, ``io.cncf.notary.signingTime``; unprotected header ``x5c`` (the chain, leaf first, base64 DER) and
  ``io.cncf.notary.signingAgent``; the ECDSA signature as JWS's raw ``r || s``;
* the signature manifest: an OCI image manifest whose config has media type ``application/vnd.cncf.notary.signature``
  (content ``{}``; what the specification requires, and what the referrers API reports as the artifact type), the
  envelope as its one layer, ``subject`` the signed manifest, and the required annotation
  ``io.cncf.notary.x509chain.thumbprint#S256`` (the chain's SHA-256 fingerprints, leaf first).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from soko.signing.keys import SigningKey

ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
ENVELOPE_MEDIA_TYPE = "application/jose+json"
PAYLOAD_MEDIA_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SIGNING_SCHEME = "notary.x509"
THUMBPRINT_ANNOTATION = "io.cncf.notary.x509chain.thumbprint#S256"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = b"{}"
ALGORITHM = "ES384"
COORDINATE_BYTES = 48  # P-384


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _canonical(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _rfc3339(when: float) -> str:
    return datetime.fromtimestamp(int(when), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def descriptor(media_type: str, content: bytes) -> dict:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(content).hexdigest(), "size": len(content)}


def envelope(target: dict, key: SigningKey, signing_time: float, agent: str) -> bytes:
    """The JWS envelope signing ``target`` (the signed manifest's descriptor: mediaType, digest, size)."""
    payload = _canonical({"targetArtifact": target})
    protected = _canonical({
        "alg": ALGORITHM,
        "crit": ["io.cncf.notary.signingScheme"],
        "cty": PAYLOAD_MEDIA_TYPE,
        "io.cncf.notary.signingScheme": SIGNING_SCHEME,
        "io.cncf.notary.signingTime": _rfc3339(signing_time),
    })
    signing_input = f"{_b64url(protected)}.{_b64url(payload)}".encode()
    r, s = decode_dss_signature(key.private_key.sign(signing_input, ec.ECDSA(hashes.SHA384())))
    signature = r.to_bytes(COORDINATE_BYTES, "big") + s.to_bytes(COORDINATE_BYTES, "big")
    chain = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in key.chain]
    return _canonical({
        "payload": _b64url(payload),
        "protected": _b64url(protected),
        "header": {"x5c": chain, "io.cncf.notary.signingAgent": agent},
        "signature": _b64url(signature),
    })


def signature_manifest(target: dict, envelope_bytes: bytes, key: SigningKey, signing_time: float) -> bytes:
    """The OCI manifest that stores ``envelope_bytes`` as a referrer of ``target``."""
    thumbprints = [hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in key.chain]
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(ARTIFACT_TYPE, EMPTY),
        "layers": [descriptor(ENVELOPE_MEDIA_TYPE, envelope_bytes)],
        "subject": target,
        "annotations": {
            THUMBPRINT_ANNOTATION: json.dumps(thumbprints, separators=(",", ":")),
            "org.opencontainers.image.created": _rfc3339(signing_time),
        },
    }, separators=(",", ":")).encode()
