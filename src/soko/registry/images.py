"""Images as ECR's control plane sees them: listing, describing, batch get and batch delete.

Reads are plain queries on the metadata tables; every write (and every manifest read that counts as a pull) goes
through :class:`soko.registry.manifests.Manifests`, the same service /v2/ uses, so immutability, limits, validation
and the manifest cache apply once.

Pagination tokens are opaque to clients: base64url of a small JSON keyset position (the last row returned).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa

from soko.digest import Digest
from soko.errors import DigestInvalid, ManifestReferenced, ManifestUnknown, SokoError, TagInvalid
from soko.meta.schema import blobs, manifest_blobs, manifests, repository_blobs, tags
from soko.meta.schema import repositories as repos
from soko.names import validate_tag
from soko.registry import media_types as mt
from soko.registry.encryption import KeyUnusable
from soko.registry.manifests import archived_image
from soko.registry.models import RepoRef

if TYPE_CHECKING:  # the Registry composes this service
    from soko.registry.service import Registry

TAGGED, UNTAGGED, ANY = "TAGGED", "UNTAGGED", "ANY"
DEFAULT_PAGE = 100


class InvalidToken(SokoError):
    """A nextToken this registry did not issue (ECR: InvalidParameterException)."""


@dataclass(frozen=True, slots=True)
class ImageDetail:
    digest: str
    tags: tuple[str, ...]
    size: int
    pushed_at: float
    media_type: str
    artifact_type: str | None
    last_pulled_at: float | None
    subject_digest: str | None
    status: str = "ACTIVE"
    last_archived_at: float | None = None
    last_activated_at: float | None = None


@dataclass(frozen=True, slots=True)
class ImageFailure:
    image_id: dict
    code: str  # an ECR ImageFailureCode
    reason: str


class ImageFailed(Exception):
    """One image of a batch could not be had (e.g. from a pull-through cache's upstream): ``code`` is ECR's
    ImageFailureCode."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ManifestLike(Protocol):
    @property
    def digest(self) -> str: ...
    @property
    def media_type(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class FoundImage:
    image_id: dict
    manifest: bytes
    media_type: str


def encode_token(position: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token: str | None, keys: tuple[str, ...]) -> dict | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        position = json.loads(raw)
    except (ValueError, TypeError):
        raise InvalidToken(
            "Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid NextToken'"
        ) from None
    if not isinstance(position, dict) or set(position) != set(keys):
        raise InvalidToken("Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid NextToken'")
    return position


def _id_of(image_id: dict) -> dict:
    return {k: image_id[k] for k in ("imageDigest", "imageTag") if image_id.get(k) is not None}


def check_image_id(image_id: dict) -> ImageFailure | None:
    """ECR's per-image validation for BatchGetImage/BatchDeleteImage; None when the identifier is usable."""
    digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
    shown = _id_of(image_id)
    if not digest and not tag:
        return ImageFailure(
            shown, "MissingDigestAndTag", "Invalid request parameters: both tag and digest cannot be null"
        )
    if digest:
        try:
            Digest.parse(digest)
        except DigestInvalid:
            return ImageFailure(
                shown,
                "InvalidImageDigest",
                "Invalid request parameters: image digest should satisfy the regex '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+' "
                "with a supported algorithm (sha256, sha512)",
            )
    if tag:
        try:
            validate_tag(tag)
        except TagInvalid as exc:
            return ImageFailure(shown, "InvalidImageTag", f"Invalid request parameters: {exc.message}")
    return None


class Images:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.ctx = registry.ctx
        self.repositories = registry.repositories
        self.manifests = registry.manifests

    # ---- ListImages -------------------------------------------------------------------------------------------
    def list_ids(
        self,
        ref: RepoRef,
        tag_status: str = ANY,
        *,
        token: str | None = None,
        limit: int | None = None,
        image_status: str = "ACTIVE",
    ) -> tuple[list[dict], str | None]:
        """One identifier per (image, tag); an untagged image once, by digest. Ordered by push order, then tag."""
        limit = limit or DEFAULT_PAGE
        position = decode_token(token, ("id", "tag"))
        tag_name = sa.func.coalesce(tags.c.name, "")
        query = sa.select(manifests.c.id, manifests.c.digest, tags.c.name).select_from(
            manifests.outerjoin(tags, tags.c.manifest_id == manifests.c.id)
        )
        with self.ctx.db.read() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            query = query.where(manifests.c.repository_id == repo_id)
            if image_status != ANY:
                query = query.where(manifests.c.image_status == image_status)
            if tag_status == TAGGED:
                query = query.where(tags.c.name.is_not(None))
            elif tag_status == UNTAGGED:
                query = query.where(tags.c.name.is_(None))
            if position is not None:
                query = query.where(
                    sa.or_(
                        manifests.c.id > position["id"],
                        sa.and_(manifests.c.id == position["id"], tag_name > position["tag"]),
                    )
                )
            rows = conn.execute(query.order_by(manifests.c.id, tag_name).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        ids = [{"imageDigest": r.digest, **({"imageTag": r.name} if r.name is not None else {})} for r in rows]
        next_token = encode_token({"id": rows[-1].id, "tag": rows[-1].name or ""}) if more else None
        return ids, next_token

    # ---- DescribeImages ---------------------------------------------------------------------------------------
    _DETAIL_COLUMNS = (
        manifests.c.id,
        manifests.c.digest,
        manifests.c.media_type,
        manifests.c.artifact_type,
        manifests.c.image_size,
        manifests.c.pushed_at,
        manifests.c.last_pulled_at,
        manifests.c.subject_digest,
        manifests.c.image_status,
        manifests.c.last_archived_at,
        manifests.c.last_activated_at,
    )

    def describe_page(
        self,
        ref: RepoRef,
        tag_status: str = ANY,
        *,
        token: str | None = None,
        limit: int | None = None,
        image_status: str = "ACTIVE",
    ) -> tuple[list[ImageDetail], str | None]:
        """ECR's DescribeImages listing: by default only ACTIVE images (``image_status``: ARCHIVED, ACTIVATING or
        ANY for the others)."""
        limit = limit or DEFAULT_PAGE
        position = decode_token(token, ("id",))
        has_tag = sa.exists().where(tags.c.manifest_id == manifests.c.id)
        with self.ctx.db.read() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            query = sa.select(*self._DETAIL_COLUMNS).where(manifests.c.repository_id == repo_id)
            if image_status != ANY:
                query = query.where(manifests.c.image_status == image_status)
            if tag_status == TAGGED:
                query = query.where(has_tag)
            elif tag_status == UNTAGGED:
                query = query.where(~has_tag)
            if position is not None:
                query = query.where(manifests.c.id > position["id"])
            rows = conn.execute(query.order_by(manifests.c.id).limit(limit + 1)).all()
            more = len(rows) > limit
            rows = rows[:limit]
            details = self._details(conn, rows)
        return details, encode_token({"id": rows[-1].id}) if more else None

    def describe_ids(self, ref: RepoRef, image_ids: list[dict]) -> list[ImageDetail]:
        """Details of the named images (each once, in request order); ManifestUnknown names the first missing one."""
        with self.ctx.db.read() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            found: dict[int, sa.Row] = {}
            for image_id in image_ids:
                digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
                if not digest and not tag:
                    raise MissingImageId("Invalid parameter: an image identifier needs an imageDigest or an imageTag")
                if digest:
                    Digest.parse(digest)
                if tag:
                    validate_tag(tag)
                query = sa.select(*self._DETAIL_COLUMNS).where(manifests.c.repository_id == repo_id)
                if tag:
                    query = query.join(tags, tags.c.manifest_id == manifests.c.id).where(
                        tags.c.repository_id == repo_id, tags.c.name == tag
                    )
                if digest:
                    query = query.where(manifests.c.digest == digest)
                row = conn.execute(query).first()
                if row is None:
                    raise ManifestUnknown(
                        f"The image with imageId {{imageDigest:'{digest or 'null'}', imageTag:'{tag or 'null'}'}} "
                        f"does not exist within the repository with name '{ref.name}' in the registry with id "
                        f"'{ref.account_id}'"
                    )
                found.setdefault(row.id, row)
            return self._details(conn, list(found.values()))

    @staticmethod
    def _details(conn: sa.Connection, rows: Sequence[sa.Row]) -> list[ImageDetail]:
        by_manifest: dict[int, list[str]] = {}
        if rows:
            for manifest_id, name in conn.execute(
                sa.select(tags.c.manifest_id, tags.c.name)
                .where(tags.c.manifest_id.in_([r.id for r in rows]))
                .order_by(tags.c.name)
            ):
                by_manifest.setdefault(manifest_id, []).append(name)
        return [
            ImageDetail(
                digest=r.digest,
                tags=tuple(by_manifest.get(r.id, ())),
                size=r.image_size,
                pushed_at=r.pushed_at,
                media_type=r.media_type,
                artifact_type=r.artifact_type,
                last_pulled_at=r.last_pulled_at,
                subject_digest=r.subject_digest,
                status=r.image_status,
                last_archived_at=r.last_archived_at,
                last_activated_at=r.last_activated_at,
            )
            for r in rows
        ]

    # ---- BatchGetImage ----------------------------------------------------------------------------------------
    def batch_get(
        self,
        ref: RepoRef,
        image_ids: list[dict],
        accepted: list[str] | None = None,
        fetch: Callable[[str], ManifestLike] | None = None,
    ) -> tuple[list[FoundImage], list[ImageFailure]]:
        """Manifests by tag and/or digest; each one returned counts as a pull (lastRecordedPullTime). ``fetch``:
        how a reference is resolved instead of the stored manifests (a pull-through cache, which records the pull
        itself and may create the repository); it raises ManifestUnknown or ImageFailed."""
        if fetch is None:
            with self.ctx.db.read() as conn:
                self.repositories.id_for(conn, ref)  # RepositoryNotFound for the whole call
        accepted = [a.split(";", 1)[0].strip().lower() for a in accepted or [] if a.strip()]
        images: list[FoundImage] = []
        failures: list[ImageFailure] = []
        seen: set[tuple] = set()
        for image_id in image_ids:
            shown = _id_of(image_id)
            key = (shown.get("imageDigest"), shown.get("imageTag"))
            if key in seen:
                continue
            seen.add(key)
            failure = check_image_id(image_id)
            if failure is not None:
                failures.append(failure)
                continue
            digest, tag = shown.get("imageDigest"), shown.get("imageTag")
            reference = tag or digest
            assert reference is not None  # check_image_id refused an id with neither
            try:
                record = (fetch or partial(self.manifests.get, ref, record_pull=False))(reference)
            except ManifestUnknown:
                failures.append(ImageFailure(shown, "ImageNotFound", "Requested image not found"))
                continue
            except ImageFailed as exc:
                failures.append(ImageFailure(shown, exc.code, exc.reason))
                continue
            except KeyUnusable as exc:  # a KMS repository's manifest needs its key (ECR's failure code KmsError)
                failures.append(ImageFailure(shown, "KmsError", exc.message))
                continue
            if tag and digest and record.digest != digest:
                failures.append(
                    ImageFailure(
                        shown,
                        "ImageTagDoesNotMatchDigest",
                        "Invalid request parameters: image tag does not match digest",
                    )
                )
                continue
            status = getattr(record, "status", "ACTIVE")  # (a pull-through fetch is always of an active image)
            if status != "ACTIVE":
                # ECR answers a pull of an archived image as not found; the reason says how to get it back.
                reason = archived_image(ref, reference, status, record.digest).message
                failures.append(ImageFailure(shown, "ImageNotFound", f"Requested image not found: {reason}"))
                continue
            if accepted and not mt.acceptable(record.media_type, accepted):
                # Soko converts no manifests (ECR converts schema 2 to the deprecated schema 1 only); an image
                # stored in a format the caller does not accept is not available to it.
                failures.append(
                    ImageFailure(
                        shown,
                        "ImageNotFound",
                        f"Requested image not found in an accepted media type: it is stored as {record.media_type}",
                    )
                )
                continue
            if fetch is None:
                self.manifests.get(ref, record.digest, record_pull=True)  # cached; records the pull
            images.append(
                FoundImage(
                    {"imageDigest": record.digest, **({"imageTag": tag} if tag else {})},
                    record.payload,
                    record.media_type,
                )
            )
        return images, failures

    # ---- BatchDeleteImage -------------------------------------------------------------------------------------
    def batch_delete(self, ref: RepoRef, image_ids: list[dict]) -> tuple[list[dict], list[ImageFailure]]:
        """ECR semantics: by digest, the image and all its tags (refused while an index references it); by tag,
        the tag — and the image with it when that was its last tag and no index needs it (ECR: "When you remove
        the last tag from an image, the image is deleted from your repository")."""
        with self.ctx.db.read() as conn:
            self.repositories.id_for(conn, ref)
        deleted: list[dict] = []
        failures: list[ImageFailure] = []
        retry: list[dict] = []
        for image_id in image_ids:
            self._delete_one(ref, image_id, deleted, failures, retry)
        # An index and its children in one request: children refused before the index went are retried once.
        for image_id in retry:
            self._delete_one(ref, image_id, deleted, failures, None)
        return deleted, failures

    def _delete_one(self, ref: RepoRef, image_id: dict, deleted: list, failures: list, retry: list | None) -> None:
        shown = _id_of(image_id)
        failure = check_image_id(image_id)
        if failure is not None:
            failures.append(failure)
            return
        digest, tag = shown.get("imageDigest"), shown.get("imageTag")
        try:
            if tag:
                if digest:
                    record = self.manifests.get(ref, tag)
                    if record.digest != digest:
                        failures.append(
                            ImageFailure(
                                shown,
                                "ImageTagDoesNotMatchDigest",
                                "Invalid request parameters: image tag does not match digest",
                            )
                        )
                        return
                digest = self.manifests.delete(ref, tag, drop_untagged=True)
                deleted.append({"imageDigest": digest, "imageTag": tag})
                return
            assert digest is not None  # check_image_id refused an id with neither
            with self.ctx.db.read() as conn:
                tag_names = list(
                    conn.execute(
                        sa.select(tags.c.name)
                        .join(manifests, manifests.c.id == tags.c.manifest_id)
                        .where(
                            manifests.c.repository_id == self.repositories.id_for(conn, ref),
                            manifests.c.digest == digest,
                        )
                        .order_by(tags.c.name)
                    ).scalars()
                )
            self.manifests.delete(ref, digest)
        except ManifestUnknown:
            failures.append(ImageFailure(shown, "ImageNotFound", "Requested image not found"))
            return
        except ManifestReferenced as exc:
            if retry is not None:
                retry.append(image_id)
            else:
                failures.append(
                    ImageFailure(
                        shown,
                        "ImageReferencedByManifestList",
                        f"Requested image referenced by manifest list: {exc.message}",
                    )
                )
            return
        if tag_names:
            deleted.extend({"imageDigest": digest, "imageTag": t} for t in tag_names)
        else:
            deleted.append({"imageDigest": digest})

    def statuses(self, ref: RepoRef, digests: list[str]) -> dict[str, str]:
        """digest → imageStatus (ACTIVE, ARCHIVED, ACTIVATING) for the images of the repository among ``digests``."""
        with self.ctx.db.read() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            if not digests:
                return {}
            return dict(
                conn.execute(
                    sa.select(manifests.c.digest, manifests.c.image_status).where(
                        manifests.c.repository_id == repo_id, manifests.c.digest.in_(digests)
                    )
                ).all()
            )

    # ---- layers -----------------------------------------------------------------------------------------------
    def linked_blobs(self, ref: RepoRef, digests: list[str], *, archived: bool = False) -> dict[str, int]:
        """digest → size for the blobs among ``digests`` that the repository holds in standard storage (``archived``:
        those it holds in the archive tier instead, which are not served and may be uploaded again)."""
        with self.ctx.db.read() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            if not digests:
                return {}
            # a repository under a customer key reads its own copies, which are never archived (``Blobs``)
            keyed = conn.execute(sa.select(repos.c.encryption_type).where(repos.c.id == repo_id)).scalar() != "AES256"
            if keyed and archived:
                return {}
            tier = sa.true() if keyed else blobs.c.tier.is_not(None) if archived else blobs.c.tier.is_(None)
            return dict(
                conn.execute(
                    sa.select(blobs.c.digest, blobs.c.size)
                    .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
                    .where(repository_blobs.c.repository_id == repo_id, blobs.c.digest.in_(digests), tier)
                ).all()
            )

    def blob_in_use(self, ref: RepoRef, digest: str) -> bool:
        """Whether an image of the repository references the blob (as config or layer)."""
        with self.ctx.db.read() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            return (
                conn.execute(
                    sa.select(manifest_blobs.c.manifest_id)
                    .join(manifests, manifests.c.id == manifest_blobs.c.manifest_id)
                    .where(manifests.c.repository_id == repo_id, manifest_blobs.c.digest == digest)
                    .limit(1)
                ).first()
                is not None
            )


class MissingImageId(SokoError):
    """An image identifier with neither digest nor tag (ECR: InvalidParameterException)."""
