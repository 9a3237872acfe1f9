"""Webhook delivery: the worker's second duty, in threads of its own, so that a slow
receiver delays neither the expiry and offers of booking.jobs.worker nor other webhooks.

The messages are written by the SQL functions in the transaction of the change itself
(migrations/functions/emit_webhook.sql). A worker claims a webhook that has messages due
(FOR UPDATE SKIP LOCKED, then a lease: busy_until) and sends its due messages one after
the other in one of SLOTS threads; so each webhook has one delivery in flight at a time,
whichever worker sends it, and a receiver that hangs holds one slot. A killed worker's
lease lapses and another worker sends the messages again, with the same webhook-id:
at least once always, exactly once when nothing fails.
"""

import json
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from booking.config import Config
from booking.db import Database, DatabaseUnavailable
from booking.jobs import outbound

log = logging.getLogger(__name__)

# Webhooks delivered at once by one worker; messages sent per claim; how often due
# messages are looked for.
SLOTS = 4
BATCH = 50
POLL_SECONDS = 0.2
CONNECT_TIMEOUT_SECONDS = 5
USER_AGENT = "booking-webhooks"

# Webhooks with a message due and no worker on them, least recently served first.
CLAIM_WEBHOOKS = """
UPDATE webhooks w SET busy_until = now() + make_interval(secs => %(lease)s)
FROM (
    SELECT id FROM webhooks
    WHERE active AND busy_until < now() AND EXISTS (
        SELECT 1 FROM webhook_messages m
        WHERE m.webhook_id = webhooks.id AND m.next_attempt_at <= now())
    ORDER BY busy_until
    LIMIT %(slots)s
    FOR UPDATE SKIP LOCKED
) due
WHERE w.id = due.id
RETURNING w.id, w.url, w.secret, w.busy_until
"""

DUE_MESSAGES = """
SELECT id, type, data, utc_timestamp_text(created_at) AS created_at FROM webhook_messages
WHERE webhook_id = %s AND next_attempt_at <= now()
ORDER BY next_attempt_at, id
LIMIT %s
"""

# The messages a claim delivered, in one statement at its end: one commit per message
# cost the database more than the sends did. A worker killed before it sends them again,
# with the same webhook-id.
RECORD_DELIVERED = """
UPDATE webhook_messages m
SET attempts = attempts + 1, last_status = d.status, last_error = NULL,
    delivered_at = now(), next_attempt_at = NULL
FROM unnest(%(ids)s::BIGINT[], %(statuses)s::INT[]) AS d (id, status)
WHERE m.id = d.id AND m.next_attempt_at IS NOT NULL
"""

# Each outcome is written only while the message still waits: one dropped meanwhile (its
# webhook deleted) stays dropped.

# The delay after the n-th failed attempt is the n-th of WEBHOOK_RETRY_SECONDS; after the
# last one the message has failed.
RECORD_FAILED_ATTEMPT = """
UPDATE webhook_messages
SET attempts = attempts + 1, last_status = %(status)s, last_error = %(error)s,
    next_attempt_at = CASE WHEN attempts < cardinality(%(delays)s::INT[])
        THEN now() + make_interval(secs => (%(delays)s::INT[])[attempts + 1]) END,
    failed_at = CASE WHEN attempts >= cardinality(%(delays)s::INT[]) THEN now() END
WHERE id = %(id)s AND next_attempt_at IS NOT NULL
"""

# 410 Gone: the receiver wants nothing more; the webhook is disabled.
RECORD_GONE = """
WITH gone AS (
    UPDATE webhooks SET active = false, disabled_at = now() WHERE id = %(webhook_id)s
)
UPDATE webhook_messages
SET attempts = attempts + 1, last_status = 410, last_error = 'the receiver answered 410 Gone',
    failed_at = now(), next_attempt_at = NULL
WHERE id = %(id)s AND next_attempt_at IS NOT NULL
"""

RELEASE_WEBHOOK = "UPDATE webhooks SET busy_until = '-infinity' WHERE id = %s AND busy_until = %s"


def message_id(row_id: int) -> str:
    return f"msg_{row_id}"


def attempt(client: httpx.Client, webhook: dict, message: dict, allow_private: bool) -> tuple:
    """One POST of the message: (status or None, error text or None)."""
    body = json.dumps(
        {"type": message["type"], "timestamp": message["created_at"], "data": message["data"]},
        separators=(",", ":"),
    )
    msg_id = message_id(message["id"])
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(webhook["secret"]).sign(msg_id, now, body),
    }
    try:
        status = outbound.post(client, webhook["url"], body.encode(), headers, allow_private)
    except outbound.Refused as exc:
        return None, f"refused: {exc}"
    except httpx.TimeoutException as exc:
        return None, f"timed out ({type(exc).__name__})"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return status, None


class Deliverer:
    """The delivery duty of one worker process: run(stop) until stop is set."""

    def __init__(self, database_url: str, config: Config) -> None:
        self.config = config
        self.database_url = database_url
        self.delays = list(config.webhook_retry_delays)
        timeout = config.webhook_timeout_seconds
        # A claim starts no send once `timeout` has passed, and a send takes about connect +
        # timeout at most: the lease outlasts a claim still being worked on.
        connect = min(CONNECT_TIMEOUT_SECONDS, timeout)
        self.lease_seconds = 2 * timeout + connect + 2
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=connect),
            follow_redirects=False,
            trust_env=False,
        )
        self.local = threading.local()

    def _db(self) -> Database:
        """One connection per thread: a Database is not shared between threads."""
        db = getattr(self.local, "db", None)
        if db is None:
            config = self.config
            db = self.local.db = Database(
                self.database_url, config.db_statement_timeout_ms, config.db_connect_timeout_s
            )
        return db

    def run(self, stop: threading.Event) -> None:
        """Claim webhooks for the free slots every POLL_SECONDS, or as soon as one frees."""
        busy: set[Future] = set()
        with ThreadPoolExecutor(SLOTS, thread_name_prefix="webhook") as pool:
            while not stop.is_set():
                for webhook in self._claim(SLOTS - len(busy)):
                    busy.add(pool.submit(self.deliver, webhook, stop))
                if busy:
                    busy = wait(busy, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)[1]
                else:
                    stop.wait(POLL_SECONDS)
        self.client.close()

    def _claim(self, slots: int) -> list[dict]:
        if not slots:
            return []
        try:
            return self._db().fetch_all(
                CLAIM_WEBHOOKS, {"lease": self.lease_seconds, "slots": slots}
            )
        except DatabaseUnavailable:
            return []  # logged by the database layer; the next poll tries again
        except Exception:
            # Whatever it is, the deliveries must go on being tried, not die with the thread.
            log.exception("claiming webhooks failed")
            return []

    def deliver(self, webhook: dict, stop: threading.Event) -> None:
        """The webhook's due messages, one at a time, until none is due, `timeout` has
        passed (a slow receiver gives its slot back), it answers 410 or the worker stops."""
        db = self._db()
        started = time.monotonic()
        delivered: dict[int, int] = {}
        try:
            for message in db.fetch_all(DUE_MESSAGES, (webhook["id"], BATCH)):
                status, error = attempt(
                    self.client, webhook, message, self.config.webhook_allow_private
                )
                if status is not None and 200 <= status < 300:
                    delivered[message["id"]] = status
                else:
                    self._record_failure(db, webhook, message, status, error)
                if (
                    status == 410
                    or stop.is_set()
                    or time.monotonic() - started > self.config.webhook_timeout_seconds
                ):
                    break
            if delivered:
                ids, statuses = list(delivered), list(delivered.values())
                db.execute(RECORD_DELIVERED, {"ids": ids, "statuses": statuses})
            db.execute(RELEASE_WEBHOOK, (webhook["id"], webhook["busy_until"]))
        except DatabaseUnavailable:
            pass  # logged by the database layer; the lease lapses and the messages wait
        except Exception:
            log.exception(
                "webhook delivery failed", extra={"fields": {"webhook_id": webhook["id"]}}
            )

    def _record_failure(self, db: Database, webhook: dict, message: dict, status, error) -> None:
        fields = {"webhook_id": webhook["id"], "message_id": message_id(message["id"])}
        if status == 410:
            db.execute(RECORD_GONE, {"id": message["id"], "webhook_id": webhook["id"]})
            log.warning("webhook disabled: its receiver answered 410", extra={"fields": fields})
            return
        db.execute(
            RECORD_FAILED_ATTEMPT,
            {"id": message["id"], "status": status, "error": error, "delays": self.delays},
        )
        log.info(
            "webhook delivery attempt failed",
            extra={"fields": {**fields, "status": status, "error": error}},
        )
