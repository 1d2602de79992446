"""An upload to a KMS repository asks KMS once: the key GenerateDataKey made when it started serves its chunks and
its completion in this process, and the key's state is still checked at each step."""

from __future__ import annotations

import hashlib

import pytest

from soko.audit import AuditQuery
from soko.registry.encryption import KeyUnusable
from tests.domain import push_blob
from tests.kms.test_service import ROOT
from tests.registry.test_kms_repositories import DATA, _read, _repo, kms  # noqa: F401 - kms: a fixture

MORE = "sha256:" + hashlib.sha256(b"more").hexdigest()


def test_a_push_asks_kms_once_and_still_stops_at_a_disabled_key(registry, kms) -> None:  # noqa: F811
    key = kms.create_key(ROOT, "push")
    ref = _repo(registry, kms, "push", key=key.key_id)
    digest = push_blob(registry, ref, DATA)
    kms.identity.audit.flush()
    uses = [r["action"] for r in kms.identity.audit.query(AuditQuery(limit=100)) if r["resource"] == key.arn]
    assert uses.count("kms:GenerateDataKey") == 1 and "kms:Decrypt" not in uses
    assert _read(registry, ref, digest) == DATA

    state = registry.uploads.start(ref)
    kms.disable_key(ROOT, key.key_id)
    with pytest.raises(KeyUnusable) as exc:
        registry.uploads.begin_chunk(ref, state.id, 0)
    assert exc.value.kms_error == "DisabledException"
    kms.enable_key(ROOT, key.key_id)
    writer = registry.uploads.begin_chunk(ref, state.id, 0)
    writer.write(b"more")
    writer.finish()
    kms.disable_key(ROOT, key.key_id)
    with pytest.raises(KeyUnusable):
        registry.uploads.complete(ref, state.id, MORE)
    kms.enable_key(ROOT, key.key_id)
    assert registry.uploads.complete(ref, state.id, MORE).size == 4
