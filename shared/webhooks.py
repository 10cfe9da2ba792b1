"""Webhook delivery: Standard Webhooks signatures, retries with backoff, SSRF-guarded POSTs.

Each delivery carries `webhook-id` (the same on every retry, so receivers can dedupe),
`webhook-timestamp` and, when a secret is configured, `webhook-signature: v1,<base64 HMAC-SHA256
of "{id}.{timestamp}.{body}">` keyed with the secret's base64-decoded bytes (`whsec_` prefix
optional), as https://www.standardwebhooks.com specifies.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

import httpx

from shared import netguard
from shared.errors import UrlRefused

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (the prefix is optional)."""
    raw = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(raw + "=" * (-len(raw) % 4))


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header value for one delivery."""
    mac = hmac.new(secret_bytes(secret), f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


@dataclass(frozen=True)
class Policy:
    """How hard to try: attempts, first backoff (doubled each time), per-attempt timeout."""

    secret: str | None = None
    attempts: int = 5
    backoff: float = 2.0
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings) -> Policy:
        return cls(settings.webhook_secret, settings.webhook_attempts,
                   settings.webhook_backoff_seconds, settings.webhook_timeout_seconds)


async def deliver(url: str, payload: dict, msg_id: str, policy: Policy,
                  guard: netguard.Guard) -> bool:
    """POST `payload` until a 2xx answer or the attempts run out; True when delivered."""
    body = json.dumps(payload, separators=(",", ":"))
    for attempt in range(policy.attempts):
        ts = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": str(ts)}
        if policy.secret:
            headers["webhook-signature"] = sign(policy.secret, msg_id, ts, body)
        try:
            status = await netguard.post(url, body.encode(), headers, guard, policy.timeout)
            if 200 <= status < 300:
                return True
            log.info("webhook %s attempt %d: HTTP %d", msg_id, attempt + 1, status)
        except UrlRefused as e:  # the address will not become public by retrying
            log.warning("webhook %s refused: %s", msg_id, e.message)
            return False
        except (httpx.HTTPError, TimeoutError, OSError) as e:
            log.info("webhook %s attempt %d: %s", msg_id, attempt + 1, type(e).__name__)
        if attempt + 1 < policy.attempts:
            await asyncio.sleep(policy.backoff * 2 ** attempt)
    log.warning("webhook %s not delivered after %d attempts", msg_id, policy.attempts)
    return False
