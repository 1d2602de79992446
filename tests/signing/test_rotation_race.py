"""Two concurrent ``soko signing rotate`` of one profile both rotate: versions 2 and 3, one after the other. The first
is held inside its transaction right before it stores its key while the second reads the newest version (the
interleaving in which, on PostgreSQL, both made version 2 and one was silently dropped)."""

from __future__ import annotations

from soko.iam.secrets import MasterKey
from soko.signing.keys import SigningKeys
from tests.races import interleaved

ACCOUNT = "000000000000"
PROFILE = f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/release_signer"


def test_concurrent_rotations_both_add_a_version(registry) -> None:
    keys = SigningKeys(registry.ctx, MasterKey.load(registry.settings.master_key, registry.settings.data_dir))
    with registry.ctx.write() as conn:
        keys.ensure(conn, ACCOUNT, PROFILE)
    versions: list[int] = []

    def rotate() -> None:
        versions.append(keys.rotate(ACCOUNT, PROFILE))

    interleaved(registry.ctx.db.engine, "INSERT INTO signing_keys", rotate, rotate)
    assert sorted(versions) == [2, 3]
    assert [version for _, version, _ in keys.certificates(ACCOUNT)] == [1, 2, 3]
    assert keys.current(ACCOUNT, PROFILE).version == 3
