"""Composition of identity: master key, credential store, tokens, /v2/ authentication, the authorizer, audit."""

from __future__ import annotations

import json
import logging
import os

from soko.audit import AuditLog
from soko.iam import ids
from soko.iam.authn import RegistryAuthenticator
from soko.iam.authorizer import IamAuthorizer
from soko.iam.credentials import CredentialStore
from soko.iam.secrets import MasterKey
from soko.iam.tokens import TokenService
from soko.kernel.context import DomainContext

log = logging.getLogger("soko.iam")


class Identity:
    def __init__(self, ctx: DomainContext) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.master = MasterKey.load(settings.master_key, settings.data_dir)
        self.credentials = CredentialStore(ctx, self.master)
        self.tokens = TokenService(self.master.token_key)
        self.audit = AuditLog(ctx)
        self.authenticate = RegistryAuthenticator(self.credentials, self.tokens, self.audit)
        self.authorizer = IamAuthorizer(ctx, self.credentials, self.audit)

    def bootstrap_root(self) -> tuple[str, str] | None:
        """Make sure the default account has a root key; returns (id, secret) when one was generated now."""
        settings = self.ctx.settings
        account = settings.account_id
        if settings.root_access_key_id and settings.root_secret_access_key:
            # The configured key is the only root key: a new id or a changed secret revokes what was there before.
            revoked = self.credentials.set_root_key(
                account, settings.root_access_key_id, settings.root_secret_access_key
            )
            if revoked:
                log.warning(
                    "root access key of account %s rotated to %s; revoked %s and their ECR tokens",
                    account,
                    settings.root_access_key_id,
                    ", ".join(revoked),
                )
                self._forget_generated_root_credentials(settings.data_dir, settings.root_access_key_id)
            return None
        if self.credentials.root_key_ids(account):
            return None
        key_id, secret = self.credentials.add_root_key(account, ids.access_key_id(), ids.secret_access_key())
        path = os.path.join(settings.data_dir, "root-credentials")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"AccountId": account, "AccessKeyId": key_id, "SecretAccessKey": secret}, f, indent=2)
            f.write("\n")
        return key_id, secret

    @staticmethod
    def _forget_generated_root_credentials(data_dir: str, current_key_id: str) -> None:
        """A generated root-credentials file for a revoked key only misleads: remove it."""
        path = os.path.join(data_dir, "root-credentials")
        try:
            with open(path) as f:
                stale = json.load(f).get("AccessKeyId") != current_key_id
        except (OSError, ValueError, AttributeError):
            return
        if stale:
            os.unlink(path)
            log.warning("removed %s: it held a revoked root key", path)
