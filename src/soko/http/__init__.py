"""HTTP glue: the aiohttp application, request context, streaming helpers, worker processes."""
