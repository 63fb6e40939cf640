"""Operator authentication for the console: HTTP Basic against argon2id hashes.

Only hashes are configured. Verifying argon2 costs ~0.1-0.3 s of CPU on purpose, so a
successful check is remembered for a few minutes under a SHA-256 of the credentials
(the clear password is never kept), and verification runs in a worker thread so the
alert loop never stalls behind a login. Unknown names still pay one verification, so
response time does not reveal which operator names exist. Serve it behind TLS.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass, field

from fastapi import HTTPException, status
from fastapi.security import HTTPBasicCredentials
from pwdlib import PasswordHash

from safecity_bridge.settings import OperatorAccount

_HASHER = PasswordHash.recommended()
_DUMMY = _HASHER.hash(secrets.token_urlsafe(16))
REALM = 'Basic realm="Sonopolis safe console", charset="UTF-8"'


def hash_password(password: str) -> str:
    """The argon2id hash to put in ``operators[].password_hash``."""
    if len(password) < 12:
        raise ValueError("operator passwords need at least 12 characters")
    return _HASHER.hash(password)


@dataclass(frozen=True)
class Operator:
    name: str
    role: str


@dataclass
class Authenticator:
    accounts: dict[str, OperatorAccount]
    cache_ttl_s: float = 300.0
    _cache: dict[str, tuple[float, Operator]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, operators: list[OperatorAccount]) -> "Authenticator":
        return cls({o.name: o for o in operators})

    async def authenticate(self, creds: HTTPBasicCredentials | None) -> Operator:
        if creds is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "authentication required", headers={"WWW-Authenticate": REALM})
        key = hashlib.sha256(f"{creds.username}\x00{creds.password}".encode()).hexdigest()
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        account = self.accounts.get(creds.username)
        stored = account.password_hash.get_secret_value() if account else _DUMMY
        ok = await asyncio.to_thread(_HASHER.verify, creds.password, stored)
        if not (ok and account):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid operator name or password", headers={"WWW-Authenticate": REALM})
        op = Operator(account.name, account.role)
        self._cache[key] = (now + self.cache_ttl_s, op)
        return op
