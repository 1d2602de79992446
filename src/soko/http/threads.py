"""Blocking domain work (storage I/O, write transactions) runs on the thread pool, never on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def offload(fn: Callable[..., T], *args) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
