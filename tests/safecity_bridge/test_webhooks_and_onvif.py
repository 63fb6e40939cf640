"""Signed webhooks a VMS can verify (and replays it can refuse); ONVIF-style event XML."""

from __future__ import annotations

import asyncio
import json
import time
import xml.etree.ElementTree as ET

import httpx
import pytest

from safecity_bridge.delivery.webhooks import (DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, Delivery, WebhookSender,
                                               WebhookSignatureError, verify)
from safecity_bridge.onvif_events import CLASS_MAP, NS, ONVIF_AUDIO_CLASSES, metadata_stream
from safecity_bridge.settings import WebhookTarget

SECRET = "0123456789abcdef-vms-secret"
INCIDENT = {"incident_id": "6f1c1a4e-8d8b-4b8a-9d1e-2f0a4c1b2d3e", "event_class": "gunshot", "first_onset": "2030-03-01T12:00:00.123+00:00",
            "sensor_ids": ["s-north", "s-east"], "latitude": 45.4395, "longitude": 4.387, "uncertainty_m": 12.5, "locate_method": "tdoa",
            "confidence": 0.91}


def test_webhook_is_signed_retried_and_verifiable():
    received: list[httpx.Request] = []
    attempts = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        attempts["n"] += 1
        if attempts["n"] == 1:
            return httpx.Response(503)  # the VMS hiccups once: retried
        received.append(request)
        verify(SECRET, request.headers[TIMESTAMP_HEADER], request.headers[SIGNATURE_HEADER], request.content)
        return httpx.Response(204)

    async def go() -> WebhookSender:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            sender = WebhookSender(client, backoff_initial_s=0.01)
            sender.start()
            target = WebhookTarget(name="vms", url="https://vms.example/hook", secret=SECRET)
            body = json.dumps({"type": "incident", "incident": INCIDENT}).encode()
            assert sender.submit(Delivery(target, body, "application/json", INCIDENT["incident_id"]))
            await sender.drain(5)
            await sender.stop()
            return sender

    sender = asyncio.run(go())
    assert sender.delivered == 1 and attempts["n"] == 2
    [req] = received
    body, ts, sig = req.content, req.headers[TIMESTAMP_HEADER], req.headers[SIGNATURE_HEADER]
    assert req.headers[DELIVERY_HEADER]
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify("another-secret-of-16+", ts, sig, body)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify(SECRET, ts, sig, body.replace(b"gunshot", b"scream"))
    with pytest.raises(WebhookSignatureError, match="replay window"):
        verify(SECRET, ts, sig, body, now=time.time() + 3600)
    with pytest.raises(WebhookSignatureError, match="missing"):
        verify(SECRET, None, sig, body)


def test_failed_webhook_is_reported_not_dropped():
    failures: list[str] = []

    async def on_failure(d: Delivery, why: str) -> None:
        failures.append(why)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))) as client:
            sender = WebhookSender(client, backoff_initial_s=0.001, on_failure=on_failure)
            sender.start()
            target = WebhookTarget(name="vms", url="https://vms.example/hook", secret=SECRET, max_attempts=3)
            sender.submit(Delivery(target, b"{}", "application/json", INCIDENT["incident_id"]))
            await sender.drain(5)
            await sender.stop()

    asyncio.run(go())
    assert failures == ["HTTP 500"]


def test_short_webhook_secret_refused():
    with pytest.raises(ValueError, match="16 characters"):
        WebhookTarget(name="vms", url="https://vms.example/hook", secret="short")


def test_onvif_event_uses_onvif_audio_classes_and_flags_the_unmapped():
    xml = metadata_stream([INCIDENT, {**INCIDENT, "event_class": "crash"}])
    root = ET.fromstring(xml)
    assert root.tag == f"{{{NS['tt']}}}MetadataStream"
    msgs = root.findall("tt:Event/wsnt:NotificationMessage", NS)
    assert len(msgs) == 2
    assert msgs[0].findtext("wsnt:Topic", namespaces=NS) == "tns1:AudioAnalytics/Audio/DetectedSound"
    cand = msgs[0].find(".//tt:AudioClassDescriptor/tt:ClassCandidate", NS)
    assert cand.findtext("tt:Type", namespaces=NS) == "gun_shot" and float(cand.findtext("tt:Likelihood", namespaces=NS)) == pytest.approx(0.91)
    assert msgs[0].find("wsnt:Message/tt:Message", NS).get("UtcTime") == "2030-03-01T12:00:00.123Z"
    # crash has no honest ONVIF class: no candidate, our class in the extension
    assert msgs[1].find(".//tt:ClassCandidate", NS) is None
    assert msgs[1].findtext(".//tt:AudioClassDescriptor/tt:Extension/son:SonopolisClass", namespaces=NS) == "crash"
    assert {v for v in CLASS_MAP.values() if v} <= set(ONVIF_AUDIO_CLASSES)
