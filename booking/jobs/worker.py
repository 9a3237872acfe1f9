"""The worker: holds and offers that expire while no request arrives, and their seats.

Nothing depends on it for correctness: every request settles its event first (expired
holds no longer count from the instant they expire, see migrations/functions/
settle_event.sql). What only the worker does is pass a seat freed by time to the next
entry waiting when nobody touches the event, within WORKER_POLL_SECONDS. Each event is
settled in its own short transaction under the event's lock, so several workers, on one
host or many, never offer one seat twice; a worker killed mid-way loses its transaction
and nothing else, and the next pass does the work again.

Its second duty, delivering webhook messages, runs in threads of its own
(booking.jobs.webhooks), so a slow receiver never holds the expiry and offers up.
"""

import logging
import os
import signal
import threading
import time

from booking.db import Database, DatabaseUnavailable
from booking.jobs.webhooks import Deliverer

log = logging.getLogger(__name__)

# Everything the worker does can wait; a booking cannot. On a host it shares with
# gunicorn it runs at the lowest CPU priority, so that delivering webhooks at full speed
# never takes a core from a request: at nice 10 the scheduler still gave it about a tenth
# of a busy core (its weight against gunicorn's, 110 to 1024), at 19 about 1.5 % (15).
NICENESS = 19

# Events with a hold or an offer past its expiry, and events with free seats and people
# waiting inside their sales window (seats a PATCH or an opened window made available).
DUE_EVENTS = """
SELECT DISTINCT event_id FROM holds WHERE status = 'held' AND expires_at <= now()
UNION
SELECT s.event_id FROM event_seats s JOIN events e ON e.id = s.event_id
WHERE s.waiting > 0 AND s.booked + s.held < e.total_seats
  AND (s.sales_start IS NULL OR s.sales_start <= now())
  AND (s.sales_end IS NULL OR s.sales_end > now())
"""

SETTLE_DUE_EVENT = "SELECT expired, offered FROM settle_due_event(%s, %s)"

RECORD_HEARTBEAT = """
INSERT INTO worker_heartbeats (worker, last_run_at) VALUES (%s, now())
ON CONFLICT (worker) DO UPDATE SET last_run_at = now()
"""


def settle_due_events(db: Database, offer_seconds: int) -> None:
    """One pass: every due event settled, what it changed logged."""
    for row in db.fetch_all(DUE_EVENTS):
        event_id = row["event_id"]
        outcome = db.fetch_one(SETTLE_DUE_EVENT, (event_id, offer_seconds))
        if outcome["expired"] or outcome["offered"]:
            log.info("event settled", extra={"fields": {"event_id": event_id, **outcome}})


def run(
    db: Database, name: str, offer_seconds: int, poll_seconds: float, deliverer: Deliverer
) -> None:
    """Settle due events every poll_seconds until SIGTERM or SIGINT, and deliver webhook
    messages in a thread of their own; a database that cannot be reached is waited out,
    not fatal."""
    os.setpriority(os.PRIO_PROCESS, 0, NICENESS)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    deliveries = threading.Thread(target=deliverer.run, args=(stop,), name="deliveries")
    deliveries.start()
    log.info("worker started", extra={"fields": {"worker": name, "poll_seconds": poll_seconds}})
    while not stop.is_set():
        started = time.monotonic()
        try:
            settle_due_events(db, offer_seconds)
            db.execute(RECORD_HEARTBEAT, (name,))
        except DatabaseUnavailable:
            pass  # logged by the database layer; the next pass tries again
        stop.wait(max(poll_seconds - (time.monotonic() - started), 0))
    deliveries.join()
    db.close()
    log.info("worker stopped", extra={"fields": {"worker": name}})
