"""A finished job's webhook: a JSON POST signed with HMAC-SHA256, retried.

The receiver checks ``X-Webhook-Signature: sha256=<hex>``, the HMAC-SHA256 with the server's
WEBHOOK_SECRET of ``<X-Webhook-Timestamp>.<body>``, and may refuse an old timestamp (a replay).
The URL is checked as remove.bg's image_url is (service/http/download.py): public addresses only, or
those in WEBHOOK_ALLOW_NETWORKS, at submit time and again at every delivery.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

from ..http.download import post

log = logging.getLogger(__name__)
ATTEMPTS = 3
BACKOFF_S = (1.0, 4.0)  # before the second and the third attempt


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def deliver(url: str, payload: dict, secret: str, trusted: tuple, timeout: float = 10.0) -> str:
    """POST ``payload`` to ``url`` until it answers 2xx, ATTEMPTS times at most; what happened, in
    a few words, for the job's status (``delivered (200) on attempt 1``, ``failed: …``)."""
    body = json.dumps(payload).encode()
    outcome = "not attempted"
    for attempt in range(1, ATTEMPTS + 1):
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Webhook-Timestamp": timestamp,
                   "X-Webhook-Signature": signature(secret, timestamp, body)}
        try:
            status = post(url, body, headers, timeout, trusted, field="webhook_url")
            if 200 <= status < 300:
                return f"delivered ({status}) on attempt {attempt}"
            outcome = f"failed: the receiver answered {status}"
        except Exception as exc:  # refused, unreachable: tried again, then reported
            outcome = f"failed: {getattr(exc, 'message', exc)}"
        log.warning("webhook %s attempt %d: %s", url, attempt, outcome)
        if attempt < ATTEMPTS:
            time.sleep(BACKOFF_S[attempt - 1])
    return outcome
