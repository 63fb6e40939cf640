"""SOAP 1.2 and WS-Security plumbing for the ONVIF camera simulator.

Kept apart from the camera's behaviour so each stays readable: this module parses a
request envelope, verifies its UsernameToken, and renders responses and faults in the
exact shape the ONVIF WSDLs (as bundled with onvif-zeep-async) describe, so the real
client library deserialises them as it would a real camera's.

WS-Security UsernameToken profile 1.0, PasswordDigest:
``Password = Base64(SHA-1(nonce + created + password))`` where ``nonce`` is the raw
bytes of the Base64 ``Nonce`` element and ``created`` the literal ``wsu:Created`` text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "ter": "http://www.onvif.org/ver10/error",
}
PASSWORD_DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
SOAP12_CONTENT_TYPE = "application/soap+xml; charset=utf-8"


class SoapFault(Exception):
    """A fault to send back: ``code`` is env:Sender/env:Receiver, ``subcode`` an ONVIF ter: name."""

    def __init__(self, code: str, subcode: str, reason: str, http_status: int = 400):
        super().__init__(reason)
        self.code, self.subcode, self.reason, self.http_status = code, subcode, reason, http_status

    def to_xml(self) -> str:
        body = (
            "<env:Fault><env:Code>"
            f"<env:Value>env:{self.code}</env:Value>"
            f"<env:Subcode><env:Value>ter:{self.subcode}</env:Value></env:Subcode>"
            "</env:Code>"
            f'<env:Reason><env:Text xml:lang="en">{escape(self.reason)}</env:Text></env:Reason>'
            "</env:Fault>"
        )
        return envelope(body)


def not_authorized(reason: str) -> SoapFault:
    return SoapFault("Sender", "NotAuthorized", f"Sender not authorized: {reason}", http_status=400)


@dataclass(frozen=True)
class SoapRequest:
    """The parts of a request envelope the simulator acts on."""

    operation: str  # local name of the Body's first child, e.g. "GotoPreset"
    namespace: str
    body: etree._Element
    username: str | None
    password_digest: str | None
    password_type: str | None
    nonce_b64: str | None
    created: str | None

    def text(self, path: str) -> str | None:
        """Text of a descendant of the operation element, e.g. ``tptz:PresetToken``."""
        return self.body.findtext(path, namespaces=NS)

    def find(self, path: str) -> etree._Element | None:
        return self.body.find(path, namespaces=NS)


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def parse_request(data: bytes) -> SoapRequest:
    """Parse a SOAP 1.2 envelope; anything else is a ``env:Sender`` fault, never a crash."""
    try:
        root = etree.fromstring(data, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise SoapFault("Sender", "WellFormed", f"request is not well-formed XML: {exc}") from exc
    if root.tag != f"{{{NS['env']}}}Envelope":
        raise SoapFault("Sender", "VersionMismatch", "expected a SOAP 1.2 Envelope")
    body = root.find("env:Body", namespaces=NS)
    if body is None or len(body) == 0:
        raise SoapFault("Sender", "InvalidArgs", "empty SOAP Body")
    op = body[0]
    qname = etree.QName(op)
    token = root.find("env:Header/wsse:Security/wsse:UsernameToken", namespaces=NS)
    username = password = ptype = nonce = created = None
    if token is not None:
        username = token.findtext("wsse:Username", namespaces=NS)
        pw = token.find("wsse:Password", namespaces=NS)
        if pw is not None:
            password, ptype = pw.text, pw.get("Type")
        nonce = token.findtext("wsse:Nonce", namespaces=NS)
        created = token.findtext("wsu:Created", namespaces=NS)
    return SoapRequest(qname.localname, qname.namespace or "", op, username, password, ptype, nonce, created)


class DigestVerifier:
    """Checks UsernameToken digests, Created freshness, and rejects replayed nonces."""

    def __init__(self, users: dict[str, str], max_skew_s: float = 300.0, nonce_cache: int = 4096):
        self.users = users
        self.max_skew_s = max_skew_s
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._cache_size = nonce_cache

    def verify(self, req: SoapRequest, now: datetime | None = None) -> str:
        """Return the authenticated user name or raise a ``ter:NotAuthorized`` fault."""
        if req.username is None:
            raise not_authorized("no WS-Security UsernameToken")
        if req.password_type != PASSWORD_DIGEST:
            raise not_authorized("only PasswordDigest is accepted")
        if not (req.password_digest and req.nonce_b64 and req.created):
            raise not_authorized("UsernameToken lacks Password, Nonce or Created")
        expected_pw = self.users.get(req.username)
        try:
            nonce = base64.b64decode(req.nonce_b64, validate=True)
            created_at = datetime.fromisoformat(req.created.replace("Z", "+00:00"))
        except ValueError as exc:
            raise not_authorized(f"malformed Nonce or Created ({exc})") from exc
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=timezone.utc)
        now = now or datetime.now(timezone.utc)
        if abs((now - created_at).total_seconds()) > self.max_skew_s:
            raise not_authorized("Created timestamp is stale or in the future")
        # Compare against a digest even for unknown users, so timing does not reveal names.
        digest = base64.b64encode(hashlib.sha1(nonce + req.created.encode() + (expected_pw or "").encode()).digest()).decode()
        if expected_pw is None or not hmac.compare_digest(digest, req.password_digest):
            raise not_authorized("wrong user name or password")
        if req.nonce_b64 in self._seen:
            raise not_authorized("replayed nonce")
        self._seen[req.nonce_b64] = None
        while len(self._seen) > self._cache_size:
            self._seen.popitem(last=False)
        return req.username


def envelope(body_xml: str) -> str:
    """Wrap a body in a SOAP 1.2 envelope declaring every ONVIF prefix used by responses."""
    decls = " ".join(f'xmlns:{p}="{u}"' for p, u in NS.items() if p not in ("wsse", "wsu"))
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope {decls}><env:Body>{body_xml}</env:Body></env:Envelope>'


def attr(value: object) -> str:
    return quoteattr(str(value))


def text(value: object) -> str:
    return escape(str(value))


def fmt(x: float) -> str:
    """xs:float rendering without exponent surprises."""
    return f"{x:.6f}"
