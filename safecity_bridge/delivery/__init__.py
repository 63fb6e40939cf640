"""Getting alerts to the security control room: the live feed (SSE) and signed webhooks.

Neither may ever hold up an alert: the feed drops a subscriber that cannot keep up
rather than wait for it, and webhooks go through a bounded queue with retries in the
background.
"""
