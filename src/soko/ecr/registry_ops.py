"""Registry-level operations: DescribeRegistry, PutReplicationConfiguration, Get/PutAccountSetting,
Put/GetRegistryScanningConfiguration and BatchGetRepositoryScanningConfiguration."""

from __future__ import annotations

from soko.access import repository_arn
from soko.ecr.api import Call
from soko.errors import RepositoryNotFound
from soko.registry.models import RepoRef
from soko.registry.settings_store import Scanning


def describe_registry(call: Call) -> dict:
    call.authorize("ecr:DescribeRegistry")
    account = call.caller.account_id
    return {"registryId": account, "replicationConfiguration": {"rules": call.api.registry.replication.get(account)}}


def put_replication_configuration(call: Call) -> dict:
    call.authorize("ecr:PutReplicationConfiguration")
    rules = call.api.registry.replication.put(call.caller.account_id, call.params["replicationConfiguration"]["rules"])
    return {"replicationConfiguration": {"rules": rules}}


def get_account_setting(call: Call) -> dict:
    call.authorize("ecr:GetAccountSetting")
    name = call.params["name"]
    return {"name": name, "value": call.api.registry.account_settings.get(call.caller.account_id, name)}


def put_account_setting(call: Call) -> dict:
    call.authorize("ecr:PutAccountSetting")
    name, value = call.params["name"], call.params["value"]
    return {"name": name, "value": call.api.registry.account_settings.put(call.caller.account_id, name, value)}


def put_registry_scanning_configuration(call: Call) -> dict:
    call.authorize("ecr:PutRegistryScanningConfiguration")
    scan_type = call.params.get("scanType") or "BASIC"
    scan_type, rules = call.api.registry.scanning.put(call.caller.account_id, scan_type, call.params.get("rules") or [])
    return {"registryScanningConfiguration": {"scanType": scan_type, "rules": rules}}


def get_registry_scanning_configuration(call: Call) -> dict:
    call.authorize("ecr:GetRegistryScanningConfiguration")
    account = call.caller.account_id
    scan_type, rules = call.api.registry.scanning.get(account)
    return {"registryId": account, "scanningConfiguration": {"scanType": scan_type, "rules": rules}}


def batch_get_repository_scanning_configuration(call: Call) -> dict:
    account = call.registry_id
    scan_type, rules = call.api.registry.scanning.get(account)
    repositories = call.api.registry.repositories
    configurations, failures = [], []
    for name in dict.fromkeys(call.params["repositoryNames"]):
        call.authorize("ecr:BatchGetRepositoryScanningConfiguration", name)
        try:
            repo = repositories.get(RepoRef(account, name))
        except RepositoryNotFound as exc:
            failures.append(
                {"repositoryName": name, "failureCode": "REPOSITORY_NOT_FOUND", "failureReason": exc.message}
            )
            continue
        configurations.append(
            {
                "repositoryArn": repository_arn(call.api.settings.region, account, name),
                "repositoryName": name,
                **Scanning.effective(name, repo.scan_on_push, scan_type, rules),
            }
        )
    return {"scanningConfigurations": configurations, "failures": failures}


OPERATIONS = {
    "DescribeRegistry": describe_registry,
    "PutReplicationConfiguration": put_replication_configuration,
    "GetAccountSetting": get_account_setting,
    "PutAccountSetting": put_account_setting,
    "PutRegistryScanningConfiguration": put_registry_scanning_configuration,
    "GetRegistryScanningConfiguration": get_registry_scanning_configuration,
    "BatchGetRepositoryScanningConfiguration": batch_get_repository_scanning_configuration,
}
