"""Operator authentication for the console: HTTP Basic against argon2id hashes.

Only hashes are configured. Verifying argon2 costs ~0.1-0.3 s of CPU on purpose, so a
successful check is remembered for a few minutes under a SHA-256 of the credentials
(the clear password is never kept). Unknown names still pay one verification, so
response time does not reveal which operator names exist. Serve it behind TLS.

Why the verifications have their own two threads and a waiting line of eight: on the
event loop's shared pool, a flood of wrong logins from anyone who can reach the port
queued without limit and starved everything else that pool runs (a supervisor's first
login took 19 s, the bridge's DNS lookups for webhooks and cameras 11 s). Beyond the
line the answer is 429 at once. Why per address: each failed login is logged with its
address, and an address with ``MAX_FAILURES`` failures in ``FAILURE_WINDOW_S`` is
refused (429) until they age out, so guessing is slow and visible. Not per operator
name: that would let anyone lock the control room out during an incident.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import HTTPException, status
from fastapi.security import HTTPBasicCredentials
from pwdlib import PasswordHash

from safecity_bridge.settings import OperatorAccount

log = logging.getLogger(__name__)

_HASHER = PasswordHash.recommended()
_DUMMY = _HASHER.hash(secrets.token_urlsafe(16))
REALM = 'Basic realm="Sonopolis safe console", charset="UTF-8"'
VERIFY_THREADS = 2
MAX_WAITING = 8  # verifications queued or running; more is a flood
MAX_FAILURES = 20
FAILURE_WINDOW_S = 300.0
MAX_CACHED = 1000


def hash_password(password: str) -> str:
    """The argon2id hash to put in ``operators[].password_hash``."""
    if len(password) < 12:
        raise ValueError("operator passwords need at least 12 characters")
    return _HASHER.hash(password)


@dataclass(frozen=True)
class Operator:
    name: str
    role: str


def _too_many(detail: str, retry_after_s: float) -> HTTPException:
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail, headers={"Retry-After": str(max(1, round(retry_after_s)))})


@dataclass
class Authenticator:
    accounts: dict[str, OperatorAccount]
    cache_ttl_s: float = 300.0
    max_failures: int = MAX_FAILURES
    failure_window_s: float = FAILURE_WINDOW_S
    _cache: dict[str, tuple[float, Operator]] = field(default_factory=dict)
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _waiting: int = 0
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="argon2"))

    @classmethod
    def from_settings(cls, operators: list[OperatorAccount]) -> "Authenticator":
        return cls({o.name: o for o in operators})

    async def authenticate(self, creds: HTTPBasicCredentials | None, client: str = "?") -> Operator:
        if creds is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "authentication required", headers={"WWW-Authenticate": REALM})
        key = hashlib.sha256(f"{creds.username}\x00{creds.password}".encode("utf-8", "replace")).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        recent = self._recent_failures(client, now)
        if len(recent) >= self.max_failures:
            raise _too_many("too many failed logins from this address; try again later", recent[0] + self.failure_window_s - now)
        if self._waiting >= MAX_WAITING:
            raise _too_many("too many logins at once; try again in a moment", 1)
        account = self.accounts.get(creds.username)
        stored = account.password_hash.get_secret_value() if account else _DUMMY
        self._waiting += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(self._pool, _HASHER.verify, creds.password, stored)
        finally:
            self._waiting -= 1
        if not (ok and account):
            recent.append(now)
            log.warning("console login failed for %r from %s (%d in the last %.0f s)", creds.username[:64], client, len(recent), self.failure_window_s)
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid operator name or password", headers={"WWW-Authenticate": REALM})
        op = Operator(account.name, account.role)
        self._remember(key, now, op)
        return op

    def _recent_failures(self, client: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(client, deque())
        while recent and recent[0] <= now - self.failure_window_s:
            recent.popleft()
        if len(self._failures) > MAX_CACHED:  # addresses that stopped trying
            for other in [c for c, q in self._failures.items() if not q and c != client]:
                del self._failures[other]
        return recent

    def _remember(self, key: str, now: float, op: Operator) -> None:
        if len(self._cache) >= MAX_CACHED:
            for stale in [k for k, (until, _) in self._cache.items() if until <= now]:
                del self._cache[stale]
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
        self._cache[key] = (now + self.cache_ttl_s, op)
