"""What each console page shows, read from the domain (``soko.registry``) with every read and change authorized
through the one authorizer under the ECR action and resource ARN the ECR API uses for the same operation.

A page builder is synchronous (it runs on the thread pool) and returns the template's variables. A part of a page
the caller may not see becomes a ``Denied`` value that the template shows as a "not allowed" panel.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from soko.access import Authorizer, Principal, RequestContext, repository_arn
from soko.errors import AccessDenied, SokoError
from soko.registry import Registry
from soko.registry.lifecycle_store import LifecyclePolicyNotFound, LifecyclePolicyPreviewNotFound
from soko.registry.models import RepoRef
from soko.registry.policies import RepositoryPolicyNotFound
from soko.scan.scans import Scans

PAGE_SIZE = 50
IMAGES_PAGE = 50
MAX_CONFIG_BYTES = 1 << 20  # an image config larger than this is not shown (configs are a few KiB)
MAX_SEARCH = 256
SORTS = {"name": ("name", False), "-name": ("name", True), "created": ("created", False), "-created": ("created", True)}
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


@dataclass(frozen=True, slots=True)
class Denied:
    """A part of a page the caller may not see: the action and resource the authorizer refused."""

    action: str
    resource: str


class BadInput(Exception):
    """A query parameter or form value the console refuses (a 400 page naming it)."""


class Viewer:
    """The signed-in caller: authorizes as ``soko.ecr.api.Call.authorize`` does (same actions, same ARNs)."""

    def __init__(
        self, principal: Principal, context: RequestContext, registry: Registry, authorizer: Authorizer
    ) -> None:
        self.principal = principal
        self.context = context
        self.registry = registry
        self.authorizer = authorizer
        self.account = principal.account_id
        self.region = registry.settings.region

    def arn(self, repository: str) -> str:
        return repository_arn(self.region, self.account, repository)

    def authorize(self, action: str, repository: str) -> None:
        self.authorize_on(action, self.arn(repository))

    def allowed(self, action: str, repository: str) -> Denied | None:
        """None when allowed; the refusal otherwise."""
        return self.allowed_on(action, self.arn(repository))

    def authorize_on(self, action: str, resource: str) -> None:
        """An action on any resource of the caller's account (a repository's ARN, ``*``, a user's ARN …)."""
        self.authorizer.authorize(self.principal, action, resource, self.account, self.context)

    def allowed_on(self, action: str, resource: str) -> Denied | None:
        try:
            self.authorize_on(action, resource)
        except AccessDenied:
            return Denied(action, resource)
        return None

    def repo(self, name: str) -> RepoRef:
        return RepoRef(self.account, name)


# ---- formatting -------------------------------------------------------------------------------------------------
def when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


# ---- repositories -----------------------------------------------------------------------------------------------
def encode_position(*values: float | int | str) -> str:
    """A page position (a keyset: the last row's sort values) as an opaque URL-safe token."""
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_position(token: str, *types: type, name: str = "after") -> tuple:
    """The values ``encode_position`` put in ``token``, checked against ``types`` (float takes an int too)."""
    refused = BadInput(f"the page position ('{name}') is not one this console made")
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError, binascii.Error):
        raise refused from None
    if not isinstance(values, list) or len(values) != len(types):
        raise refused
    out = []
    for value, kind in zip(values, types, strict=True):
        accepted = (int, float) if kind is float else (kind,)
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise refused
        out.append(kind(value))
    return tuple(out)


def repositories_page(viewer: Viewer, query: dict[str, str]) -> dict:
    """ecr:DescribeRepositories on ``repository/*`` (what DescribeRepositories without names authorizes)."""
    denied = viewer.allowed("ecr:DescribeRepositories", "*")
    search = query.get("q", "").strip()
    sort = query.get("sort", "name")
    if sort not in SORTS:
        raise BadInput(f"unknown sort order; use one of {', '.join(SORTS)}")
    if len(search) > MAX_SEARCH:
        raise BadInput(f"the search text is longer than {MAX_SEARCH} characters")
    out: dict = {"search": search, "sort": sort, "sorts": list(SORTS), "denied": denied}
    if denied is not None:
        return out
    after_token = query.get("after", "")
    after = decode_position(after_token, float, str) if after_token else None
    column, descending = SORTS[sort]
    page, total, more = viewer.registry.repositories.search(
        viewer.account, contains=search, sort=column, descending=descending, after=after, limit=PAGE_SIZE
    )
    out.update(
        repositories=[
            {
                "name": r.name,
                "created": when(r.created_at),
                "mutability": r.tag_mutability,
                "scan_on_push": r.scan_on_push,
                "encryption": r.encryption_type,
            }
            for r in page
        ],
        total=total,
        next=encode_position(page[-1].created_at, page[-1].name) if more and page else None,
        paged=bool(after_token),
    )
    return out


# ---- one repository ---------------------------------------------------------------------------------------------
def _scan_label(scan) -> str:
    if scan is None:
        return "not scanned"
    if scan.status in ("COMPLETE", "ACTIVE"):  # ACTIVE: an enhanced scan kept up to date (CONTINUOUS_SCAN)
        counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(scan.counts.items())) or "no findings"
        return f"{scan.status.lower()}: {counts}"
    return scan.status.lower().replace("_", " ")


def repository_page(viewer: Viewer, name: str, query: dict[str, str]) -> dict:
    denied = viewer.allowed("ecr:DescribeRepositories", name)
    out: dict = {"name": name, "denied": denied}
    if denied is not None:
        return out
    ref = viewer.repo(name)
    repo = viewer.registry.repositories.get(ref)
    out["repository"] = {
        "arn": viewer.arn(name),
        "created": when(repo.created_at),
        "mutability": repo.tag_mutability,
        "mutability_filters": repo.tag_mutability_filters,
        "scan_on_push": repo.scan_on_push,
        "encryption": repo.encryption_type,
        "kms_key": repo.kms_key,
    }
    images_denied = viewer.allowed("ecr:DescribeImages", name)
    out["images_denied"] = images_denied
    if images_denied is None:
        token = query.get("images_after") or None
        try:
            details, next_token = viewer.registry.images.describe_page(ref, token=token, limit=IMAGES_PAGE)
        except SokoError:
            raise BadInput("the page position ('images_after') is not one this console made") from None
        scans = Scans(viewer.registry).summaries(ref, [d.digest for d in details]) if details else {}
        out["images"] = [
            {
                "digest": d.digest,
                "tags": list(d.tags[:20]),
                "more_tags": max(0, len(d.tags) - 20),
                "size": size(d.size),
                "pushed": when(d.pushed_at),
                "pulled": when(d.last_pulled_at),
                "media_type": d.media_type,
                # An image's config type is no artifact type worth showing; a signature's or an SBOM's is.
                "artifact_type": None if d.artifact_type == IMAGE_CONFIG else d.artifact_type,
                "scan": _scan_label(scans.get(d.digest)),
            }
            for d in details
        ]
        out["images_next"] = next_token
    out["lifecycle_denied"] = viewer.allowed("ecr:GetLifecyclePolicy", name)
    if out["lifecycle_denied"] is None:
        try:
            out["lifecycle"] = viewer.registry.lifecycle.get(ref).text
        except LifecyclePolicyNotFound:
            out["lifecycle"] = None
    out["policy_denied"] = viewer.allowed("ecr:GetRepositoryPolicy", name)
    if out["policy_denied"] is None:
        try:
            out["policy"] = viewer.registry.policies.repository_policy(ref)
        except RepositoryPolicyNotFound:
            out["policy"] = None
    return out


def update_settings(viewer: Viewer, name: str, form: dict[str, str]) -> None:
    """The settings form: tag mutability (ecr:PutImageTagMutability) and scan on push
    (ecr:PutImageScanningConfiguration), each authorized and written only when it changes."""
    ref = viewer.repo(name)
    viewer.authorize("ecr:DescribeRepositories", name)
    repo = viewer.registry.repositories.get(ref)
    mutability = form.get("mutability", repo.tag_mutability)
    if mutability not in ("MUTABLE", "IMMUTABLE"):
        raise BadInput("tag mutability must be MUTABLE or IMMUTABLE (exclusion filters: use the API)")
    scan_on_push = form.get("scan_on_push") == "on"
    if mutability != repo.tag_mutability:
        viewer.authorize("ecr:PutImageTagMutability", name)
        viewer.registry.repositories.set_tag_mutability(ref, mutability, None)
    if scan_on_push != repo.scan_on_push:
        viewer.authorize("ecr:PutImageScanningConfiguration", name)
        viewer.registry.repositories.set_scan_on_push(ref, scan_on_push)


# ---- one image --------------------------------------------------------------------------------------------------
def _json(payload: bytes) -> object | None:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None


def _config(viewer: Viewer, ref: RepoRef, manifest: dict) -> dict | None:
    config = manifest.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
        return None
    size_ = config.get("size")
    if not isinstance(size_, int) or size_ > MAX_CONFIG_BYTES:
        return {"too_large": True, "digest": config["digest"]}
    blobs = viewer.registry.blobs
    blob = blobs.open(ref, config["digest"])
    with blobs.reader(blob) as f:
        doc = _json(f.read(MAX_CONFIG_BYTES + 1))
    if not isinstance(doc, dict):
        return {"unreadable": True, "digest": config["digest"]}
    inner = doc.get("config")
    if not isinstance(inner, dict):
        inner = {}
    labels = inner.get("Labels")
    platform = "/".join(str(doc[k]) for k in ("os", "architecture", "variant") if isinstance(doc.get(k), str))
    history = [
        {"created": h.get("created", ""), "created_by": h.get("created_by", ""), "empty": bool(h.get("empty_layer"))}
        for h in doc.get("history", [])
        if isinstance(h, dict)
    ]
    return {
        "digest": config["digest"],
        "platform": platform,
        "env": [e for e in inner.get("Env") or [] if isinstance(e, str)] if isinstance(inner.get("Env"), list) else [],
        "entrypoint": inner.get("Entrypoint"),
        "cmd": inner.get("Cmd"),
        "workdir": inner.get("WorkingDir"),
        "user": inner.get("User"),
        "labels": {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        "history": history,
        "created": doc.get("created"),
    }


def image_page(viewer: Viewer, name: str, digest: str, host: str) -> dict:
    """ecr:DescribeImages for the image's details; ecr:BatchGetImage for its manifest; ecr:GetDownloadUrlForLayer
    for its config blob; ecr:ListImageReferrers; ecr:DescribeImageScanFindings — each part on its own."""
    out: dict = {"name": name, "digest": digest}
    ref = viewer.repo(name)
    out["denied"] = viewer.allowed("ecr:DescribeImages", name)
    if out["denied"] is not None:
        return out
    [detail] = viewer.registry.images.describe_ids(ref, [{"imageDigest": digest}])
    out["detail"] = {
        "tags": list(detail.tags),
        "size": size(detail.size),
        "pushed": when(detail.pushed_at),
        "pulled": when(detail.last_pulled_at),
        "media_type": detail.media_type,
        "artifact_type": detail.artifact_type,
        "subject": detail.subject_digest,
    }
    out["pull"] = f"docker pull {host}/{name}@{digest}"
    out["manifest_denied"] = viewer.allowed("ecr:BatchGetImage", name)
    if out["manifest_denied"] is None:
        record = viewer.registry.manifests.get(ref, digest)  # not counted as a pull
        manifest = _json(record.payload)
        out["manifest_text"] = (
            json.dumps(manifest, indent=2) if manifest is not None else record.payload.decode("utf-8", "replace")
        )
        if isinstance(manifest, dict):
            out["layers"] = [
                {
                    "digest": layer.get("digest", ""),
                    "size": size(layer.get("size")),
                    "media_type": layer.get("mediaType", ""),
                }
                for layer in manifest.get("layers") or []
                if isinstance(layer, dict)
            ]
            out["children"] = [
                {
                    "digest": child.get("digest", ""),
                    "platform": "/".join(
                        str(child.get("platform", {}).get(k))
                        for k in ("os", "architecture", "variant")
                        if isinstance(child.get("platform"), dict) and child["platform"].get(k)
                    ),
                    "size": size(child.get("size")),
                }
                for child in manifest.get("manifests") or []
                if isinstance(child, dict)
            ]
            if record.media_type not in INDEX_TYPES:
                out["config_denied"] = viewer.allowed("ecr:GetDownloadUrlForLayer", name)
                if out["config_denied"] is None:
                    try:
                        out["config"] = _config(viewer, ref, manifest)
                    except SokoError:
                        out["config"] = {"unreadable": True, "digest": manifest.get("config", {}).get("digest")}
    out["referrers_denied"] = viewer.allowed("ecr:ListImageReferrers", name)
    if out["referrers_denied"] is None:
        out["referrers"] = viewer.registry.manifests.referrers(ref, digest)
    out["findings_denied"] = viewer.allowed("ecr:DescribeImageScanFindings", name)
    if out["findings_denied"] is None:
        scan = Scans(viewer.registry).get(ref, digest)
        out["scan"] = (
            None
            if scan is None
            else {
                "status": scan.status,
                "description": scan.description,
                "completed": when(scan.completed_at),
                "counts": scan.counts,
                "findings": [_basic_view(f) for f in scan.findings[:500]],
                "more": max(0, len(scan.findings) - 500),
            }
        )
    return out


def _basic_view(finding: dict) -> dict:
    """An ENHANCED finding shown in the BASIC finding's columns (name, severity, link, package, description)."""
    details = finding.get("packageVulnerabilityDetails")
    if details is None:
        return finding
    package = (details.get("vulnerablePackages") or [{}])[0]
    version = "-".join(v for v in (package.get("version"), package.get("release")) if v)
    return {"name": details.get("vulnerabilityId", ""), "severity": finding.get("severity", ""),
            "uri": details.get("sourceUrl", ""), "description": finding.get("description", ""),
            "attributes": [{"key": "package_name", "value": package.get("name", "")},
                           {"key": "package_version", "value": version}]}


# ---- lifecycle policy -------------------------------------------------------------------------------------------
def lifecycle_page(viewer: Viewer, name: str) -> dict:
    out: dict = {"name": name, "denied": viewer.allowed("ecr:GetLifecyclePolicy", name), "error": None}
    if out["denied"] is not None:
        return out
    ref = viewer.repo(name)
    viewer.registry.repositories.get(ref)
    try:
        stored = viewer.registry.lifecycle.get(ref)
        out["text"], out["evaluated"] = stored.text, when(stored.last_evaluated_at)
    except LifecyclePolicyNotFound:
        out["text"], out["evaluated"] = "", None
    out["preview_denied"] = viewer.allowed("ecr:GetLifecyclePolicyPreview", name)
    if out["preview_denied"] is None:
        try:
            state = viewer.registry.lifecycle.get_preview(ref)
        except LifecyclePolicyPreviewNotFound:
            out["preview"] = None
        else:
            out["preview"] = {
                "status": state.status,
                "policy_text": state.policy_text,
                "failure": state.failure,
                "summary": state.summary,
                "results": [
                    {
                        "digest": r["imageDigest"],
                        "tags": r.get("imageTags") or [],
                        "pushed": when(r.get("imagePushedAt")),
                        "action": r.get("action", {}).get("type", ""),
                        "rule": r.get("appliedRulePriority"),
                    }
                    for r in state.results[:1000]
                ],
                "more": max(0, len(state.results) - 1000),
            }
    return out


def save_lifecycle(viewer: Viewer, name: str, text: str) -> None:
    """ecr:PutLifecyclePolicy; the domain validates (LifecyclePolicyInvalid carries ECR's message)."""
    viewer.authorize("ecr:PutLifecyclePolicy", name)
    viewer.registry.lifecycle.put(viewer.repo(name), text)


def start_preview(viewer: Viewer, name: str, text: str) -> None:
    """ecr:StartLifecyclePolicyPreview of the text in the editor (the stored policy when it is empty)."""
    viewer.authorize("ecr:StartLifecyclePolicyPreview", name)
    viewer.registry.lifecycle.start_preview(viewer.repo(name), text or None)


# ---- repository policy ------------------------------------------------------------------------------------------
class PolicyLockOut(SokoError):
    """The policy would keep the caller from setting a policy again (SetRepositoryPolicy's check without force)."""


def policy_page(viewer: Viewer, name: str) -> dict:
    """ecr:GetRepositoryPolicy, as GetRepositoryPolicy authorizes it."""
    out: dict = {"name": name, "denied": viewer.allowed("ecr:GetRepositoryPolicy", name), "error": None}
    if out["denied"] is not None:
        return out
    ref = viewer.repo(name)
    try:
        out["text"] = viewer.registry.policies.repository_policy(ref)
        out["stored"] = True
    except RepositoryPolicyNotFound:
        viewer.registry.repositories.get(ref)  # RepositoryNotFound (a 404) rather than "no policy"
        out["text"], out["stored"] = "", False
    return out


def save_policy(viewer: Viewer, identity, name: str, text: str, force: bool) -> None:
    """ecr:SetRepositoryPolicy with SetRepositoryPolicy's checks: the document is validated by the domain
    (PolicyInvalid, shown in place), and without ``force`` a policy that would lock the caller out is refused."""
    from soko.ecr.policies import LOCKOUT, would_lock_out
    from soko.registry.policies import validate_repository_policy

    viewer.authorize("ecr:SetRepositoryPolicy", name)
    policy = validate_repository_policy(text)
    ref = viewer.repo(name)
    viewer.registry.repositories.get(ref)
    if not force and would_lock_out(
        identity, viewer.registry, viewer.principal, viewer.context, viewer.account, name, policy
    ):
        raise PolicyLockOut(LOCKOUT)
    viewer.registry.policies.set_repository_policy(ref, text)


def delete_policy(viewer: Viewer, name: str) -> None:
    """ecr:DeleteRepositoryPolicy."""
    viewer.authorize("ecr:DeleteRepositoryPolicy", name)
    viewer.registry.policies.delete_repository_policy(viewer.repo(name))
