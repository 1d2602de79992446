"""The configured root key is the default account's only root key: a new id or a changed secret at start revokes the
old key and the ECR tokens issued for it (both databases)."""

from __future__ import annotations

import json
import logging
import os

from tests.conftest import ROOT_KEY_ID, ROOT_SECRET

from soko.iam.service import Identity

NEW_ID, NEW_SECRET = "AKIATESTROOT00000002", "rotated-root-secret-00000000000000000000"


def _restart(registry, key_id: str, secret: str) -> Identity:
    registry.settings.root_access_key_id, registry.settings.root_secret_access_key = key_id, secret
    identity = Identity(registry.ctx)
    identity.bootstrap_root()
    return identity


def _token_works(identity: Identity, token_b64: str) -> bool:
    import base64

    password = base64.b64decode(token_b64).decode().partition(":")[2]
    verified = identity.tokens.verify(password, identity.ctx.clock())
    return verified is not None and identity.credentials.is_valid(verified[0], issued_at=verified[2]) is not None


def test_a_new_root_key_revokes_the_old_one_and_its_tokens(registry, caplog) -> None:
    first = _restart(registry, ROOT_KEY_ID, ROOT_SECRET)
    old_token, _ = first.tokens.issue(ROOT_KEY_ID, registry.ctx.clock())
    assert _token_works(first, old_token)
    # an unchanged configuration changes nothing
    again = _restart(registry, ROOT_KEY_ID, ROOT_SECRET)
    assert _token_works(again, old_token)

    with caplog.at_level(logging.WARNING, logger="soko.iam"):
        second = _restart(registry, NEW_ID, NEW_SECRET)
    assert second.credentials.root_key_ids(registry.settings.account_id) == [NEW_ID]
    assert second.credentials.lookup(ROOT_KEY_ID) is None
    assert second.credentials.lookup(NEW_ID).secret_access_key == NEW_SECRET
    assert not _token_works(second, old_token)
    new_token, _ = second.tokens.issue(NEW_ID, registry.ctx.clock())
    assert _token_works(second, new_token)
    assert f"rotated to {NEW_ID}; revoked {ROOT_KEY_ID}" in caplog.text
    assert NEW_SECRET not in caplog.text and ROOT_SECRET not in caplog.text


def test_a_changed_secret_for_the_same_id_replaces_it(registry, caplog) -> None:
    first = _restart(registry, ROOT_KEY_ID, ROOT_SECRET)
    old_token, _ = first.tokens.issue(ROOT_KEY_ID, registry.ctx.clock())
    with caplog.at_level(logging.WARNING, logger="soko.iam"):
        second = _restart(registry, ROOT_KEY_ID, NEW_SECRET)
    assert second.credentials.lookup(ROOT_KEY_ID).secret_access_key == NEW_SECRET
    assert not _token_works(second, old_token)
    assert _token_works(second, second.tokens.issue(ROOT_KEY_ID, registry.ctx.clock())[0])
    assert "previous secret" in caplog.text and NEW_SECRET not in caplog.text and ROOT_SECRET not in caplog.text


def test_a_configured_key_replaces_a_generated_one_and_its_file(registry) -> None:
    generated = _restart(registry, "", "")
    path = os.path.join(registry.settings.data_dir, "root-credentials")
    with open(path) as f:
        old_id = json.load(f)["AccessKeyId"]
    assert generated.credentials.lookup(old_id) is not None
    configured = _restart(registry, NEW_ID, NEW_SECRET)
    assert configured.credentials.lookup(old_id) is None
    assert not os.path.exists(path)  # it held a revoked secret
