"""Who is asking, and over which scheme, when the API sits behind a reverse proxy.

The app applies ``X-Forwarded-For`` and ``X-Forwarded-Proto`` itself, once, from the
peers of ``ApiSettings.trusted_proxies`` only, so the rate limiter
(``api.security.client_ip``) and every absolute URL the API writes from
``request.base_url`` / ``request.url`` (the NGSI-LD ``@context`` link and body, the
csourceRegistration example) read the same answer, whatever server runs the app.
``sonopolis api`` turns uvicorn's own proxy handling off, so uvicorn's
``FORWARDED_ALLOW_IPS`` cannot trust a second, different set of peers.
"""

from __future__ import annotations

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.settings import ApiSettings


def trust_proxy_headers(app: FastAPI, settings: ApiSettings) -> None:
    """Believe the forwarded client address and scheme from the configured proxies, and only from them.

    A request from any other peer keeps its own address and scheme, whatever headers it
    sends. With several trusted hops the client is the right-most entry no trusted proxy
    wrote (uvicorn's rule).
    """
    if settings.trust_forwarded_for:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=[str(net) for net in settings.trusted_proxies])
