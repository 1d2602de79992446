"""A client of other OCI Distribution registries (upstreams of pull-through caches, replication destinations).

One module, shared by every room that talks to another registry: `client.py` (the /v2/ calls, auth, limits).
"""

from soko.remote.client import (
    BlobStream,
    Credentials,
    RegistryClient,
    RemoteManifest,
    UpstreamError,
)

__all__ = ["BlobStream", "Credentials", "RegistryClient", "RemoteManifest", "UpstreamError"]
