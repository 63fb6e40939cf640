"""An alert sent again after a restart must carry the id of the first sending.

Recovery is at least once: an alert that went out just before a stop, but whose mark
was not yet written, goes out again at the next start. A VMS can only recognise the
second copy if the ``X-Sonopolis-Delivery`` id is the same as the first one's; a fresh
random id per sending made it a second incident in the VMS.
"""

from __future__ import annotations

import psycopg

from safecity_bridge.delivery.webhooks import DELIVERY_HEADER
from safecity_bridge.runner import BridgeThread, NoCameras
from safecity_bridge.settings import WebhookTarget
from tests.polling import wait_until
from tests.safecity_bridge.bridge_harness import WebhookReceiver, event, make_settings, past


def test_an_alert_sent_again_after_a_restart_keeps_its_delivery_id(db, mqtt_broker, operators, pub):
    hook = WebhookReceiver(DELIVERY_HEADER)
    target = WebhookTarget(name="vms", url=hook.url, secret="0123456789abcdef-test")
    shot = event("s-north", "gunshot", onset=past(2))
    try:
        with BridgeThread(make_settings(db.safe, mqtt_broker.port, operators=operators, webhooks=[target]), NoCameras) as bt:
            pub.publish(shot)
            wait_until(lambda: len(hook.deliveries) == 1, timeout=10, what="the live webhook")
            bt.call(bt.service.settle())
        # The stop came after the webhook but before the alert mark was written.
        with psycopg.connect(db.safe, autocommit=True) as conn:
            assert conn.execute("UPDATE safe.events SET alerted_at = NULL WHERE event_id = %s", (shot["event_id"],)).rowcount == 1
        with BridgeThread(make_settings(db.safe, mqtt_broker.port, operators=operators, webhooks=[target]), NoCameras) as bt:
            wait_until(lambda: len(hook.deliveries) == 2, timeout=10, what="the recovered webhook")
            bt.call(bt.service.settle())
        first, again = hook.deliveries
        assert first and again == first, "the VMS cannot tell the re-sent alert from a new one"
    finally:
        hook.close()
