"""Table definitions, one module per concern; all share one MetaData so Alembic sees the whole schema."""

from soko.meta.schema.base import metadata
from soko.meta.schema.blobs import blobs, repository_blobs
from soko.meta.schema.manifests import manifest_blobs, manifest_children, manifests, tags
from soko.meta.schema.repositories import repositories
from soko.meta.schema.uploads import uploads

__all__ = [
    "blobs",
    "manifest_blobs",
    "manifest_children",
    "manifests",
    "metadata",
    "repositories",
    "repository_blobs",
    "tags",
    "uploads",
]
