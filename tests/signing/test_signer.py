"""Signing on push through the domain: the push queues a status and a job in its unit of work, the ``signing`` job
signs (a notation signature as a referrer, verified by ``tests/signing/notary.py``), statuses move IN_PROGRESS →
COMPLETE or FAILED with a reason, an image's statuses and jobs go with it, and rotation keeps old signatures valid."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from cryptography import x509

from soko.cli import main as soko_main
from soko.iam.secrets import MasterKey
from soko.kernel.signing_queue import KIND
from soko.meta.schema import event_outbox, image_signing_status, jobs, signing_keys
from soko.registry.models import RepoRef
from soko.signing.config import SigningConfigurations
from soko.signing.signer import Signer
from tests.domain import push_image
from tests.signing.notary import verify

ACCOUNT = "000000000000"
PROFILE = f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/release_signer"
OTHER = f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/all_images"


def _setup(registry):
    master = MasterKey.load(registry.settings.master_key, registry.settings.data_dir)
    configs = SigningConfigurations(registry.ctx, master)
    configs.put(ACCOUNT, [{"signingProfileArn": PROFILE,
                           "repositoryFilters": [{"filter": "team/*", "filterType": "WILDCARD_MATCH"}]}])
    return configs, Signer(registry, master)


def _job_keys(registry) -> list[str]:
    with registry.ctx.db.read() as conn:
        return list(conn.execute(sa.select(jobs.c.key).where(jobs.c.kind == KIND)).scalars())


def _statuses(configs, registry, ref: RepoRef, digest: str):
    return configs.statuses(registry.repositories.get(ref).id, digest)


def _signature(registry, ref: RepoRef, digest: str) -> tuple[bytes, bytes]:
    [referrer] = registry.manifests.referrers(ref, digest)
    manifest = registry.manifests.get(ref, referrer["digest"]).payload
    layer = json.loads(manifest)["layers"][0]["digest"]
    blob = registry.blobs.open(ref, layer)
    with registry.blobs.reader(blob) as reader:
        return manifest, reader.read()


def test_push_queues_then_signs_verifiably_and_rotation_keeps_old_signatures(registry, settings, capsys):
    configs, signer = _setup(registry)
    ref, elsewhere = RepoRef(ACCOUNT, "team/app"), RepoRef(ACCOUNT, "other/app")
    digest = push_image(registry, ref, "v1", [b"layer one"])
    push_image(registry, elsewhere, "v1", [b"layer two"])  # no rule matches: nothing queued
    [status] = _statuses(configs, registry, ref, digest)
    assert (status.profile_arn, status.status) == (PROFILE, "IN_PROGRESS")
    [key] = _job_keys(registry)

    assert signer.run(key).startswith("signed team/app@")
    [status] = _statuses(configs, registry, ref, digest)
    assert status.status == "COMPLETE" and status.failure_code is None
    assert _job_keys(registry) == []  # a finished one-shot job leaves no row
    record = registry.manifests.get(ref, digest)
    subject = {"mediaType": record.media_type, "digest": digest, "size": len(record.payload)}
    trust = configs.keys.trust_store(ACCOUNT)
    first_leaf = verify(*_signature(registry, ref, digest), subject, trust)
    # the signature's push is an ECR Referrer Action event (and was not itself queued for signing)
    with registry.ctx.db.read() as conn:
        bodies = [json.loads(b) for b in conn.execute(sa.select(event_outbox.c.body)).scalars()]
    [referrer_event] = [b for b in bodies if b["detail-type"] == "ECR Referrer Action"]
    assert referrer_event["detail"]["artifact-media-type"] == "application/vnd.cncf.notary.signature"
    assert referrer_event["detail"]["image-digest"] == status.signature_digest

    # rotation: a new key signs from now on; the old signature still verifies against the same trust store
    cli = ["--data-dir", settings.data_dir, "--database-url", settings.effective_database_url]
    assert soko_main(["signing", "rotate", PROFILE.replace("release_signer", "unknown"), *cli]) == 2
    assert soko_main(["signing", "rotate", PROFILE.replace(ACCOUNT, "111111111111"), *cli]) == 2
    assert "no key for" in capsys.readouterr().err
    assert soko_main(["signing", "rotate", PROFILE, *cli]) == 0
    assert json.loads(capsys.readouterr().out) == {"signingProfileArn": PROFILE, "version": 2}
    assert soko_main(["signing", "certificates", *cli]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(c["signingProfileArn"], c["version"]) for c in listed] == [(PROFILE, 1), (PROFILE, 2)]
    second = push_image(registry, ref, "v2", [b"layer three"])
    [key] = _job_keys(registry)
    signer.run(key)
    record = registry.manifests.get(ref, second)
    second_leaf = verify(*_signature(registry, ref, second),
                         {"mediaType": record.media_type, "digest": second, "size": len(record.payload)}, trust)
    assert second_leaf.serial_number != first_leaf.serial_number and second_leaf.subject == first_leaf.subject
    assert verify(*_signature(registry, ref, digest), subject, configs.keys.trust_store(ACCOUNT))


def test_concurrent_puts_failures_with_a_reason_and_deletes_drop_statuses(registry):
    configs, signer = _setup(registry)
    ref = RepoRef(ACCOUNT, "team/app")
    # concurrent puts naming a new profile: one key (version 1), issued by the account's one root
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: configs.put(ACCOUNT, [{"signingProfileArn": PROFILE}, {"signingProfileArn": OTHER}]),
                      range(4)))  # no filters: every push
    certificates = configs.keys.certificates(ACCOUNT)
    assert [(profile, version) for profile, version, _ in certificates] == sorted([(OTHER, 1), (PROFILE, 1)])
    root = x509.load_pem_x509_certificate(configs.keys.trust_store(ACCOUNT).encode())
    for _, _, pem in certificates:
        x509.load_pem_x509_certificate(pem.encode()).verify_directly_issued_by(root)
    digest = push_image(registry, ref, "v1", [b"layer"])
    assert [s.profile_arn for s in _statuses(configs, registry, ref, digest)] == [PROFILE, OTHER]
    with registry.ctx.db.write() as conn:  # the second profile's key is gone (as if its rows were lost)
        conn.execute(sa.delete(signing_keys).where(signing_keys.c.profile_arn == OTHER))
    for key in _job_keys(registry):
        signer.run(key)
    done, failed = _statuses(configs, registry, ref, digest)
    assert done.status == "COMPLETE"
    assert (failed.status, failed.failure_code) == ("FAILED", "SIGNING_PROFILE_NOT_FOUND")
    assert OTHER in failed.failure_reason

    # deleting the image drops its statuses and queued jobs in the same transaction
    doomed = push_image(registry, ref, "v2", [b"other layer"])
    assert len(_job_keys(registry)) == 2
    registry.manifests.delete(ref, doomed)
    assert _job_keys(registry) == []
    with registry.ctx.db.read() as conn:
        assert not conn.execute(sa.select(image_signing_status.c.id)
                                .where(image_signing_status.c.manifest_digest == doomed)).first()
    # deleting the configuration stops signing and leaves signatures
    configs.delete(ACCOUNT)
    third = push_image(registry, ref, "v3", [b"third"])
    assert _statuses(configs, registry, ref, third) == [] and _job_keys(registry) == []
    assert registry.manifests.referrers(ref, digest)
