"""The OCI suite's extra fixture: ECR-style Basic credentials for raw-socket requests."""

from __future__ import annotations

import pytest


@pytest.fixture
def auth_header(server) -> dict[str, str]:
    """Headers that authenticate a raw request as the default account's root."""
    return server.basic_auth
