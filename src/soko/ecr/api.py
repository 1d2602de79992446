"""ECR operations: a dispatch table from operation name to handler, each in the module for its group.

Handlers receive validated parameters (botocore's model already checked shapes, enums, lengths and patterns),
authorize the ECR action through the same hook the /v2/ front end uses, and call the domain.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import soko.ecr
from soko.access import Principal, RequestContext, repository_arn
from soko.aws.errors import ServiceError
from soko.aws.json_protocol import ECR_TARGET_PREFIX
from soko.aws.service_model import get_service_model, validate_request
from soko.config import Settings
from soko.iam.layer_urls import DataUrls
from soko.iam.service import Identity
from soko.pullthrough.cache import PullThroughCache
from soko.registry import Registry
from soko.registry.models import RepoRef
from soko.secrets.store import SecretStore


@dataclass
class Call:
    """One ECR request as a handler sees it."""

    api: EcrApi
    params: dict
    caller: Principal
    context: RequestContext

    @property
    def registry_id(self) -> str:
        return self.params.get("registryId") or self.caller.account_id

    def repo(self, name_param: str = "repositoryName") -> RepoRef:
        return RepoRef(self.registry_id, self.params[name_param])

    def authorize(
        self,
        action: str,
        repository: str | None = None,
        registry_id: str | None = None,
        condition_keys: dict | None = None,
    ) -> None:
        """``condition_keys``: the operation's own keys (aws:RequestTag/..., aws:TagKeys)."""
        account = registry_id or self.registry_id
        arn = repository_arn(self.api.settings.region, account, repository) if repository is not None else "*"
        context = self.context
        if condition_keys:
            extra = dict(context.extra)
            extra["condition_keys"] = {**extra.get("condition_keys", {}), **condition_keys}
            context = context.with_extra(extra)
        self.api.identity.authorizer.authorize(self.caller, action, arn, account if repository else None, context)


Operation = Callable[[Call], dict]


class EcrApi:
    service = "ecr"
    target_prefix = ECR_TARGET_PREFIX
    internal_error = "ServerException"

    def __init__(
        self, settings: Settings, registry: Registry, identity: Identity, pull_through: PullThroughCache | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.identity = identity
        self._pull_through = pull_through
        self.data_urls = DataUrls.from_settings(identity, settings)  # GetDownloadUrlForLayer's URLs, when on
        self.operations: dict[str, Operation] = {}
        # Every module of this package that defines OPERATIONS contributes its handlers.
        for info in pkgutil.iter_modules(soko.ecr.__path__):
            module = importlib.import_module(f"soko.ecr.{info.name}")
            self.operations.update(getattr(module, "OPERATIONS", {}))

    @property
    def pull_through(self) -> PullThroughCache:
        """The pull-through cache (the app shares one with /v2/; made here when the API is used alone)."""
        if self._pull_through is None:
            self._pull_through = PullThroughCache(self.registry, SecretStore(self.registry.ctx, self.identity.master))
        return self._pull_through

    def check_supported(self, operation: str) -> None:
        """Raise UnsupportedOperationException, naming it, for an ECR operation this registry does not implement.

        The front door asks before validating parameters, so the answer does not depend on what the request
        carried; operations botocore's model does not know stay UnknownOperationException (from validation)."""
        if operation not in self.operations and operation in get_service_model("ecr").operation_names:
            raise ServiceError(
                "UnsupportedOperationException",
                f"The ECR operation {operation} is not supported by this registry (Soko implements "
                f"{len(self.operations)} of ECR's {len(get_service_model('ecr').operation_names)} operations)",
            )

    def validate(self, operation: str, params: object) -> dict:
        return validate_request(operation, params)

    def call(self, operation: str, params: dict, caller: Principal, context: RequestContext) -> dict:
        handler = self.operations.get(operation)
        if handler is None:
            self.check_supported(operation)
            raise ServiceError("UnknownOperationException", f"Unknown operation {operation!r}")
        return handler(Call(self, params, caller, context))
