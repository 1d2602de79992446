"""The domain: repositories, blobs, uploads, manifests and tags. Every front end goes through ``Registry``."""

from soko.registry.service import Registry

__all__ = ["Registry"]
