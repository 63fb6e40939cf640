"""HEAD on every GET route (RFC 9110 §9.3.2: HEAD is GET without the content).

FastAPI registers a GET route for GET only, so every HEAD of the open API answered
405; link checkers and open-data harvesters probe files and pages with HEAD. Adding
``HEAD`` to each route would also add a duplicate operation per route to the OpenAPI
document, so this ASGI middleware answers HEAD as the GET it stands for: same status
and headers (``Content-Length`` included, as RFC 9110 allows), no body.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """Run a HEAD request as GET and drop the body; an endless stream (SSE) is told the client left."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        started = False
        finished = False

        async def receive_until_headers() -> Message:
            # Once the headers are out, the body is not wanted: an SSE generator that waits
            # for the disconnect stops here instead of polling the events table forever.
            if started:
                return {"type": "http.disconnect"}
            return await receive()

        async def send_headers_only(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
                await send(message)
            elif message["type"] == "http.response.body" and not message.get("more_body", False) and not finished:
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, receive_until_headers, send_headers_only)
        if started and not finished:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
