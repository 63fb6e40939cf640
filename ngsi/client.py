"""Batch upserts to any NGSI-LD broker (Orion-LD, Scorpio, Stellio) over an injected httpx client.

Error tree::

    NgsiError
    ├── BrokerUnavailable   connection refused/timeout, 5xx or 429 after the retry budget
    └── BrokerRefused       the whole request refused (401/403/415/400...): a configuration
                            problem, retrying would not help

Per-entity failures inside a 207 Multi-Status are *not* exceptions: they come back in
:class:`UpsertOutcome`, split into ``rejected`` (4xx: parked by the caller with the
reason) and ``pending`` (5xx/429: retried here with backoff, still failing after the
budget). Entities are sent as ``application/ld+json`` with their ``@context`` in the
body, so no ``Link`` header is involved on writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from common.backoff import Backoff
from ngsi.settings import NgsiSettings

log = logging.getLogger(__name__)

UPSERT_PATH = "/ngsi-ld/v1/entityOperations/upsert"
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class NgsiError(Exception):
    """Base of the publisher's errors."""


class BrokerUnavailable(NgsiError):
    """The broker could not be reached or kept failing; the cursor must not move."""


class BrokerRefused(NgsiError):
    """The broker refused the whole request; the message carries its ProblemDetails."""

    def __init__(self, status: int, problem: dict[str, Any] | None, context: str) -> None:
        self.status = status
        self.problem = problem or {}
        super().__init__(f"{context}: HTTP {status} {self.problem.get('type', '')} {self.problem.get('title', '')} {self.problem.get('detail', '')}".rstrip())


@dataclass(frozen=True)
class Problem:
    """One entity's ProblemDetails from a 207."""

    status: int | None
    type: str
    reason: str


@dataclass
class UpsertOutcome:
    ok: list[str] = field(default_factory=list)
    rejected: dict[str, Problem] = field(default_factory=dict)
    pending: dict[str, Problem] = field(default_factory=dict)
    requests: int = 0

    def merge(self, other: UpsertOutcome) -> None:
        self.ok.extend(other.ok)
        self.rejected.update(other.rejected)
        self.pending.update(other.pending)
        self.requests += other.requests


ERROR_STATUS: dict[str, int] = {
    "InvalidRequest": 400, "BadRequestData": 400, "AlreadyExists": 409, "OperationNotSupported": 422,
    "ResourceNotFound": 404, "InternalError": 500, "TooComplexQuery": 403, "TooManyResults": 403,
    "LdContextNotAvailable": 503, "NoMultiTenantSupport": 501, "NonexistentTenant": 404,
}
"""HTTP status of each NGSI-LD error type (CIM 009 §6.3.2), for a ProblemDetails that omits ``status``."""


def _problem(raw: Any) -> Problem:
    """One BatchEntityError's ProblemDetails; without ``status``, the one its ETSI error type maps to.

    Orion-LD's 207 errors may carry only type/title/detail: read as "no status", an
    InternalError or LdContextNotAvailable (the broker failed to fetch our @context) was
    parked as refused instead of retried.
    """
    if not isinstance(raw, dict):
        return Problem(None, "", "broker gave no ProblemDetails")
    status = raw.get("status")
    kind = str(raw.get("type", ""))
    if not isinstance(status, int) or isinstance(status, bool):
        # by its last segment: some brokers still spell the base http:// (Scorpio, early Orion-LD)
        status = ERROR_STATUS.get(kind.rpartition("/")[2]) if "/ngsi-ld/errors/" in kind else None
    reason = " - ".join(str(raw[k]) for k in ("title", "detail") if raw.get(k)) or "no reason given"
    return Problem(status, kind, reason)


def _is_retryable(problem: Problem) -> bool:
    return problem.status in RETRYABLE_STATUS


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class BrokerClient:
    """Upserts normalized entities in chunks; ``http`` carries base URL and timeout.

    Options: ``replace`` for ``NoiseLevelObserved`` (Sonopolis owns every attribute, so
    the stored entity becomes exactly the last one sent: re-sends are idempotent and an
    attribute that disappeared from a recomputed bucket disappears in the broker too);
    ``update`` for ``Device`` (the city may enrich devices in its broker, e.g.
    ``owner``, ``refDeviceModel``; a merge keeps what it added).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: NgsiSettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = http
        self._settings = settings
        self._sleep = sleep

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/ld+json", "Accept": "application/json"}
        if self._settings.tenant:
            headers["NGSILD-Tenant"] = self._settings.tenant
        if self._settings.token is not None:
            headers["Authorization"] = f"Bearer {self._settings.token.get_secret_value()}"
        return headers

    def _backoff(self) -> Backoff:
        return Backoff(initial=self._settings.backoff_initial_s, maximum=self._settings.backoff_max_s)

    async def upsert(self, entities: Sequence[dict[str, Any]], *, mode: Literal["replace", "update"] = "replace") -> UpsertOutcome:
        """Upsert all ``entities`` (normalized, with ``@context``) in chunks of ``chunk_size``.

        Raises :class:`BrokerUnavailable` when a chunk cannot be delivered at all within
        the retry budget (nothing after it is attempted, so the caller's order holds),
        :class:`BrokerRefused` when the broker refuses a request as a whole.
        """
        total = UpsertOutcome()
        size = self._settings.chunk_size
        for i in range(0, len(entities), size):
            total.merge(await self._upsert_chunk(list(entities[i : i + size]), mode))
        return total

    async def _upsert_chunk(self, chunk: list[dict[str, Any]], mode: str) -> UpsertOutcome:
        outcome = UpsertOutcome()
        backoff = self._backoff()
        todo = chunk
        for attempt in range(1, self._settings.max_attempts + 1):
            try:
                response = await self._http.post(UPSERT_PATH, params={"options": mode}, json=todo, headers=self._headers())
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                outcome.requests += 1
                log.warning("NGSI-LD upsert of %d entities: %s (attempt %d/%d)", len(todo), type(exc).__name__, attempt, self._settings.max_attempts)
                if attempt == self._settings.max_attempts:
                    raise BrokerUnavailable(f"broker unreachable after {attempt} attempts: {exc}") from exc
                await self._sleep(backoff.next_delay())
                continue
            outcome.requests += 1
            status = response.status_code
            if status in (201, 204):
                outcome.ok.extend(e["id"] for e in todo)
                outcome.pending.clear()
                return outcome
            if status == 207:
                retry_ids = self._read_multi_status(_json_or_none(response), todo, outcome)
                if not retry_ids:
                    return outcome
                todo = [e for e in todo if e["id"] in retry_ids]
                log.warning("NGSI-LD upsert: %d entities failed transiently (attempt %d/%d)", len(todo), attempt, self._settings.max_attempts)
                if attempt < self._settings.max_attempts:
                    await self._sleep(backoff.next_delay())
                continue
            if status in RETRYABLE_STATUS:
                log.warning("NGSI-LD upsert of %d entities: HTTP %d (attempt %d/%d)", len(todo), status, attempt, self._settings.max_attempts)
                if attempt == self._settings.max_attempts:
                    raise BrokerUnavailable(f"broker answered HTTP {status} after {attempt} attempts")
                retry_after = response.headers.get("retry-after", "")
                delay = backoff.next_delay()
                if retry_after.isdigit():
                    delay = min(float(retry_after), self._settings.backoff_max_s)
                await self._sleep(delay)
                continue
            body = _json_or_none(response)
            raise BrokerRefused(status, body if isinstance(body, dict) else None, f"upsert of {len(todo)} entities")
        return outcome

    @staticmethod
    def _read_multi_status(body: Any, sent: list[dict[str, Any]], outcome: UpsertOutcome) -> set[str]:
        """Record a 207's successes and failures; return the ids worth retrying."""
        if not isinstance(body, dict):
            raise BrokerUnavailable("207 without a BatchOperationResult body")
        sent_ids = {e["id"] for e in sent}
        retry: set[str] = set()
        for eid in body.get("success", []):
            if eid in sent_ids:
                outcome.ok.append(eid)
                outcome.pending.pop(eid, None)
        for err in body.get("errors", []):
            eid = err.get("entityId") if isinstance(err, dict) else None
            if eid not in sent_ids:
                continue
            problem = _problem(err.get("error"))
            if _is_retryable(problem):
                outcome.pending[eid] = problem
                retry.add(eid)
            else:
                outcome.rejected[eid] = problem
                outcome.pending.pop(eid, None)
        answered = set(outcome.ok) | set(outcome.rejected) | retry
        for eid in sent_ids - answered:  # neither success nor error: do not assume either
            outcome.pending[eid] = Problem(None, "", "not mentioned in the 207 result")
            retry.add(eid)
        return retry
