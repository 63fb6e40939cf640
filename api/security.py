"""Admin bearer token and the per-client-IP rate limit of the public read API.

The token comparison is constant-time (``hmac.compare_digest``) so response timing
does not leak how much of a guess was right. The rate limiter is a token bucket per
client IP held in memory (one API process per city is the expected deployment; behind
several replicas, the reverse proxy should limit too).
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi import Request
from pydantic import SecretStr

from api.errors import AdminDisabled, TooManyRequests, Unauthorized


def require_admin_factory(token: SecretStr | None) -> Callable[[Request], None]:
    """A FastAPI dependency refusing requests without ``Authorization: Bearer <token>``."""
    expected = token.get_secret_value().encode() if token is not None else None

    def require_admin(request: Request) -> None:
        if expected is None:
            raise AdminDisabled("no admin token is configured (SONOPOLIS_SMART_API__ADMIN_TOKEN): admin routes are off")
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Unauthorized("missing bearer token", headers={"WWW-Authenticate": 'Bearer realm="sonopolis-admin"'})
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthorized("invalid bearer token", headers={"WWW-Authenticate": 'Bearer realm="sonopolis-admin", error="invalid_token"'})

    return require_admin


class TokenBuckets:
    """Per-key token bucket: ``rate`` tokens per second, at most ``burst`` saved up.

    ``take(key)`` returns 0 when a request may proceed, else the seconds to wait.
    Buckets are kept in LRU order and the oldest evicted beyond ``max_keys`` so a scan
    from many addresses cannot exhaust memory.
    """

    def __init__(self, per_minute: int, burst: int, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def client_ip(request: Request) -> str:
    """The address the rate limit counts: the connection's peer, as ``api/proxy.py`` left it.

    From a trusted proxy (``ApiSettings.trusted_proxies``) the peer has already been
    replaced by the right-most ``X-Forwarded-For`` entry that is no trusted proxy, the one
    the proxy appended; what lies left of it came from the client, and taking it would let
    any client pick a new address per request and never be limited. Reading the header
    here again would believe it from any peer, including one that bypasses the proxy.
    """
    return request.client.host if request.client else "unknown"


def rate_key(host: str) -> str:
    """The bucket of an address: an IPv6 client's /64, an IPv4 client's address.

    An IPv6 subscriber is given a whole /64 (RFC 6177) and may use any address in it
    (privacy extensions change it by themselves): counted per address, one client could
    take a fresh address per request and never be limited. An IPv4-mapped address
    (``::ffff:192.0.2.1``, from a dual-stack socket) is the IPv4 client it maps.
    """
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host  # "unknown", a test client's name
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def rate_limit_factory(buckets: TokenBuckets) -> Callable[[Request], None]:
    """A dependency for the public read routes: 429 + ``Retry-After`` when the bucket is empty."""

    def rate_limit(request: Request) -> None:
        wait = buckets.take(rate_key(client_ip(request)))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise TooManyRequests(f"rate limit exceeded, retry in {seconds} s", headers={"Retry-After": str(seconds)})

    return rate_limit
