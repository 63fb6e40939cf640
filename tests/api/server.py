"""The API served by a real uvicorn on a free port, in a thread with its own event loop.

Needed where an in-process transport cannot stand in: an endless SSE stream, and a
browser loading the built-in page.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from api.settings import ApiSettings
from sonopolis.embedded import free_port, wait_port


@contextmanager
def running_api(settings: ApiSettings, dsn: str) -> Iterator[str]:
    port = free_port()
    holder: dict[str, uvicorn.Server] = {}
    ready = threading.Event()

    async def serve() -> None:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=6, kwargs={"autocommit": True}, open=False) as pool:
            app = create_app(settings, pool)
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
            holder["server"] = server
            ready.set()
            await server.serve()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    ready.wait(30)
    wait_port("127.0.0.1", port, 30, "API under test")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        holder["server"].should_exit = True
        thread.join(15)
