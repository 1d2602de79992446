"""The KMS domain service (``soko.kms.service.KeyService``) as the encryption layer uses it: data keys, decrypt,
key states, rotation, deletion with crypto-shredding (settable clock), the aws/ecr managed key, the blob format."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from soko.access import Principal
from soko.iam.service import Identity
from soko.kms import errors
from soko.kms.service import DAY, MAX_ON_DEMAND_ROTATIONS, KeyService
from tests.clock import Clock

ACCOUNT = "000000000000"
ROOT = Principal(f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT, "Account")
OTHER_ROOT = Principal("arn:aws:iam::111122223333:root", "111122223333", "Account")
ECR = "ecr.us-east-1.amazonaws.com"


@pytest.fixture
def clock(registry) -> Clock:
    clock = Clock(1_800_000_000.0)
    registry.ctx.clock = clock
    return clock


@pytest.fixture
def kms(registry, clock) -> KeyService:
    return KeyService(registry.ctx, Identity(registry.ctx))


def test_data_keys_round_trip_by_id_arn_and_alias(kms) -> None:
    key = kms.create_key(ROOT, "repo key")
    kms.create_alias(ROOT, "alias/repo", key.key_id)
    ctx = {"aws:ecr:arn": "arn:aws:ecr:us-east-1:000000000000:repository/app"}
    for ref in (key.key_id, key.arn, "alias/repo", f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/repo"):
        assert kms.resolve_key(ACCOUNT, ref).key_id == key.key_id
        plaintext, blob, arn = kms.generate_data_key(ROOT, ref, ctx, ECR)
        assert len(plaintext) == 32 and arn == key.arn and plaintext not in blob
        assert kms.decrypt(ROOT, blob, ctx, ECR) == (plaintext, key.arn)
        # Soko's own use (principal None): the state is still checked, no policy
        assert kms.decrypt(None, blob, ctx, ECR)[0] == plaintext


def test_wrong_context_and_corrupt_blobs_are_invalid_ciphertext(kms) -> None:
    key = kms.create_key(ROOT)
    _, blob, _ = kms.generate_data_key(ROOT, key.key_id, {"a": "1"}, None)
    with pytest.raises(errors.InvalidCiphertextException):
        kms.decrypt(ROOT, blob, {"a": "2"}, None)
    with pytest.raises(errors.InvalidCiphertextException):
        kms.decrypt(ROOT, blob, None, None)
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    for bad in (bytes(flipped), blob[:-1], blob[:10], b"", b"\x01" + b"x" * 100, b"\x02" + blob[1:]):
        with pytest.raises(errors.InvalidCiphertextException):
            kms.decrypt(ROOT, bad, {"a": "1"}, None)
    # another version number in the header: authenticated, so refused
    other = blob[:40] + bytes([blob[40] ^ 1]) + blob[41:]
    with pytest.raises(errors.InvalidCiphertextException):
        kms.decrypt(ROOT, other, {"a": "1"}, None)


def test_bad_references(kms) -> None:
    for ref in (
        "nope",
        "alias/missing",
        "arn:aws:kms:eu-west-1:000000000000:key/" + "0" * 8 + "-0000-0000-0000-" + "0" * 12,
        "arn:aws:kms:us-east-1:000000000000:key/12345678-1234-1234-1234-123456789012",
        "arn:bogus",
        "x" * 5000,
    ):
        with pytest.raises(errors.NotFoundException):
            kms.resolve_key(ACCOUNT, ref)
    key = kms.create_key(ROOT)
    with pytest.raises(errors.NotFoundException):  # a bare key id names a key of the caller's account only
        kms.resolve_key("111122223333", key.key_id)


def test_states_disable_enable_and_pending_deletion(kms, clock) -> None:
    key = kms.create_key(ROOT)
    _, blob, _ = kms.generate_data_key(ROOT, key.key_id, {}, None)
    kms.disable_key(ROOT, key.key_id)
    assert kms.resolve_key(ACCOUNT, key.key_id).state == "Disabled"
    with pytest.raises(errors.DisabledException):
        kms.generate_data_key(None, key.key_id, {}, ECR, account_id=ACCOUNT)
    with pytest.raises(errors.DisabledException):
        kms.decrypt(None, blob, {}, ECR)
    kms.enable_key(ROOT, key.key_id)
    assert kms.decrypt(None, blob, {}, ECR)[1] == key.arn

    info = kms.schedule_key_deletion(ROOT, key.key_id, 7)
    assert info.state == "PendingDeletion" and info.deletion_date == clock.now + 7 * DAY
    with pytest.raises(errors.KMSInvalidStateException):
        kms.decrypt(None, blob, {}, ECR)
    with pytest.raises(errors.KMSInvalidStateException):
        kms.enable_key(ROOT, key.key_id)
    assert kms.cancel_key_deletion(ROOT, key.key_id).state == "Disabled"
    kms.enable_key(ROOT, key.key_id)
    assert kms.decrypt(None, blob, {}, ECR)[0]


def test_deletion_after_the_waiting_period_shreds_the_key(kms, registry, clock) -> None:
    key = kms.create_key(ROOT)
    _, blob, _ = kms.generate_data_key(ROOT, key.key_id, {}, None)
    kms.create_alias(ROOT, "alias/gone", key.key_id)
    kms.schedule_key_deletion(ROOT, key.key_id, 7)
    clock.now += 7 * DAY - 1
    with pytest.raises(errors.KMSInvalidStateException):
        kms.decrypt(None, blob, {}, ECR)
    clock.now += 2
    assert kms.upkeep() == (1, 0)
    with pytest.raises(errors.KeyDeleted):
        kms.decrypt(None, blob, {}, ECR)
    with pytest.raises(errors.NotFoundException):
        kms.resolve_key(ACCOUNT, "alias/gone")
    with pytest.raises(errors.KeyDeleted):
        kms.describe_key(ROOT, key.key_id)
    assert [k.key_id for k in kms.list_keys(ROOT)] == []
    import sqlalchemy as sa

    from soko.meta.schema import kms_key_material

    with registry.ctx.db.read() as conn:  # the material is gone from the database, not just hidden
        assert conn.execute(sa.select(sa.func.count()).select_from(kms_key_material)).scalar() == 0


def test_deletion_is_carried_out_at_next_use_too(kms, clock) -> None:
    key = kms.create_key(ROOT)
    _, blob, _ = kms.generate_data_key(ROOT, key.key_id, {}, None)
    kms.schedule_key_deletion(ROOT, key.key_id, 30)
    clock.now += 31 * DAY
    with pytest.raises(errors.KeyDeleted):
        kms.decrypt(None, blob, {}, ECR)


def test_rotation_keeps_old_blobs_and_uses_the_new_version(kms, clock) -> None:
    key = kms.create_key(ROOT)
    _, old, _ = kms.generate_data_key(ROOT, key.key_id, {}, None)
    assert kms.rotate_key_on_demand(ROOT, key.key_id).current_version == 2
    _, new, _ = kms.generate_data_key(ROOT, key.key_id, {}, None)
    assert old[37:41] == b"\0\0\0\1" and new[37:41] == b"\0\0\0\2"
    kms.enable_key_rotation(ROOT, key.key_id, 90)
    clock.now += 91 * DAY
    _, newest, _ = kms.generate_data_key(ROOT, key.key_id, {}, None)  # due: rotated at this use
    assert newest[37:41] == b"\0\0\0\3"
    for blob in (old, new, newest):
        assert kms.decrypt(None, blob, {}, ECR)[1] == key.arn
    _, status = kms.get_key_rotation_status(ROOT, key.key_id)
    assert status.enabled and status.period_days == 90 and status.next_rotation_at == clock.now + 90 * DAY
    assert status.on_demand_started_at is not None


def test_aws_managed_ecr_key_is_created_once_and_only_usable_through_ecr(kms, registry) -> None:
    arn = kms.aws_managed_key(ACCOUNT, "aws/ecr")
    assert kms.aws_managed_key(ACCOUNT, "aws/ecr") == arn
    assert kms.resolve_key(ACCOUNT, "alias/aws/ecr").arn == arn
    plaintext, blob, _ = kms.generate_data_key(ROOT, "alias/aws/ecr", {}, ECR)
    assert kms.decrypt(ROOT, blob, {}, ECR)[0] == plaintext
    with pytest.raises(errors.AccessDeniedException):  # directly, not through ECR
        kms.generate_data_key(ROOT, "alias/aws/ecr", {}, None)
    with pytest.raises(errors.AccessDeniedException):
        kms.disable_key(ROOT, arn)


def test_key_policy_governs_even_the_root(kms) -> None:
    import json

    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                    "Condition": {"StringNotEquals": {"kms:EncryptionContext:purpose": "ok"}},
                },
                {"Effect": "Allow", "Principal": {"AWS": OTHER_ROOT.arn}, "Action": "kms:Decrypt", "Resource": "*"},
            ],
        }
    )
    key = kms.create_key(ROOT, policy=policy)
    _, blob, _ = kms.generate_data_key(ROOT, key.key_id, {"purpose": "ok"}, None)
    _, other_blob, _ = kms.generate_data_key(ROOT, key.key_id, {"purpose": "no"}, None)
    assert kms.decrypt(ROOT, blob, {"purpose": "ok"}, None)
    with pytest.raises(errors.AccessDeniedException):
        kms.decrypt(ROOT, other_blob, {"purpose": "no"}, None)
    # cross-account: the key policy names the other account's root; its root holds every IAM permission
    assert kms.decrypt(OTHER_ROOT, blob, {"purpose": "ok"}, None)
    with pytest.raises(errors.AccessDeniedException):
        kms.generate_data_key(OTHER_ROOT, key.arn, {}, None)


def test_key_policies_with_conditions_soko_does_not_evaluate_are_refused(kms) -> None:
    import json

    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"kms:GrantOperations": "Decrypt"}},
                }
            ],
        }
    )
    with pytest.raises(errors.MalformedPolicyDocumentException, match="kms:grantoperations"):
        kms.create_key(ROOT, policy=policy)
    # keys KMS defines but Soko never sets on a request: a Deny on them would never match, so they are refused
    for unset in ("kms:ReEncryptOnSameKey", "kms:BypassPolicyLockoutSafetyCheck"):
        with pytest.raises(errors.MalformedPolicyDocumentException, match=unset.lower()):
            kms.create_key(ROOT, policy=policy.replace("kms:GrantOperations", unset))
    lockout = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": OTHER_ROOT.arn}, "Action": "kms:*", "Resource": "*"}
            ],
        }
    )
    with pytest.raises(errors.MalformedPolicyDocumentException, match="will not allow you"):
        kms.create_key(ROOT, policy=lockout)
    assert kms.create_key(ROOT, policy=lockout, bypass_policy_lockout_safety_check=True).state == "Enabled"


def test_every_use_is_audited_without_plaintext(kms, registry) -> None:
    key = kms.create_key(ROOT)
    plaintext, blob, _ = kms.generate_data_key(None, key.key_id, {"repo": "app"}, ECR, account_id=ACCOUNT)
    kms.decrypt(None, blob, {"repo": "app"}, ECR)
    with pytest.raises(errors.InvalidCiphertextException):
        kms.decrypt(None, blob, {"repo": "other"}, ECR)
    kms.identity.audit.flush()
    from soko.audit import AuditQuery

    rows = [r for r in kms.identity.audit.query(AuditQuery(limit=100)) if r["event"] == "kms"]
    names = {(r["action"], r["decision"]) for r in rows}
    assert {
        ("kms:CreateKey", "allow"),
        ("kms:GenerateDataKey", "allow"),
        ("kms:Decrypt", "allow"),
        ("kms:Decrypt", "error"),
    } <= names
    ecr_rows = [r for r in rows if r["principal"] == ECR]
    assert ecr_rows and all('"invokedBy":"ecr.us-east-1.amazonaws.com"' in r["reason"] for r in ecr_rows)
    import base64

    for r in rows:
        assert plaintext.hex() not in r["reason"] and base64.b64encode(plaintext).decode() not in r["reason"]


def test_the_migrated_schema_matches_the_declared_kms_tables(registry) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from soko.meta.schema import metadata

    with registry.ctx.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert not [d for d in diff if "kms_" in repr(d)]


def test_decrypt_with_a_key_id_authorizes_before_comparing_keys(kms) -> None:
    """A caller who may not use the ciphertext's key gets AccessDenied whatever KeyId it names: an
    IncorrectKeyException would tell it which key the ciphertext is not of."""
    key = kms.create_key(ROOT)
    _, blob, _ = kms.generate_data_key(ROOT, key.key_id, {}, None)
    theirs = kms.create_key(OTHER_ROOT)
    with pytest.raises(errors.AccessDeniedException):
        kms.decrypt(OTHER_ROOT, blob, {}, None, key_ref=theirs.key_id)
    with pytest.raises(errors.AccessDeniedException):
        kms.decrypt(OTHER_ROOT, blob, {}, None, key_ref=key.arn)
    mine = kms.create_key(ROOT)  # a caller who may use it still learns it named the wrong key
    with pytest.raises(errors.IncorrectKeyException):
        kms.decrypt(ROOT, blob, {}, None, key_ref=mine.key_id)
    assert kms.decrypt(ROOT, blob, {}, None, key_ref=key.key_id)[1] == key.arn


def test_concurrent_on_demand_rotations_are_each_real_and_keep_the_limit(kms) -> None:
    key = kms.create_key(ROOT)
    for _ in range(MAX_ON_DEMAND_ROTATIONS - 5):
        kms.rotate_key_on_demand(ROOT, key.key_id)
    start = threading.Barrier(10)

    def rotate() -> str:
        start.wait()
        try:
            kms.rotate_key_on_demand(ROOT, key.key_id)
            return "rotated"
        except errors.LimitExceededException:
            return "limit"

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        outcomes = sorted(pool.map(lambda _: rotate(), range(10)))
    assert outcomes == ["limit"] * 5 + ["rotated"] * 5  # each 200 a rotation of its own, the 25 held
    assert kms.describe_key(ROOT, key.key_id).current_version == MAX_ON_DEMAND_ROTATIONS + 1
    with pytest.raises(errors.LimitExceededException):
        kms.rotate_key_on_demand(ROOT, key.key_id)
