"""GET /metrics: counters summed over all gunicorn workers move by exactly what happened."""

import os
import signal
import time
import uuid
from collections import Counter

import pytest
import requests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from booking import create_app
from booking.config import Config
from harness import free_port, wait_for
from harness.http import CANCEL, EVENTS, RESERVE, overlap, post_json

WORKERS = 3


@pytest.fixture(scope="module")
def metered(start_gunicorn):
    """A server of its own, so that no other test's traffic shows in its counters."""
    return start_gunicorn(workers=WORKERS)


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def connected_pids(samples: dict) -> set[str]:
    """Workers with an open connection: the gauge has one series per live worker."""
    series = {
        labels: number
        for (name, labels), number in samples.items()
        if name == "db_connections_open"
    }
    assert all("pid" in dict(labels) for labels in series), "metrics are not per worker"
    return {dict(labels)["pid"] for labels, number in series.items() if number == 1}


def spread_over_workers(url: str, event_id: int) -> None:
    """Overlapping reads until at least two workers have served a database request."""
    for _ in range(20):
        if len(connected_pids(scrape(url))) >= 2:
            return
        overlap([lambda: requests.get(f"{url}{EVENTS}/{event_id}", timeout=10)] * 8)
    pytest.fail("the requests never reached a second worker")


def test_booking_counters_sum_over_workers(metered, make_event):
    url = metered.url
    reserve, cancel = f"{url}{RESERVE}", f"{url}{CANCEL}"
    five_seats, roomy = make_event(5), make_event(100)
    spread_over_workers(url, roomy)
    before = scrape(url)

    users = [f"user-{uuid.uuid4().hex}" for _ in range(8)]
    race = overlap(
        [lambda u=u: post_json(reserve, {"event_id": five_seats, "user_id": u}) for u in users]
    )
    winners = [u for u, r in zip(users, race, strict=True) if r.status_code == 201]
    again = [post_json(reserve, {"event_id": five_seats, "user_id": u}) for u in winners[:2]]
    missing = [post_json(reserve, {"event_id": 2_000_000_000, "user_id": "u"}) for _ in range(3)]
    cancels = [post_json(cancel, {"event_id": five_seats, "user_id": u}) for u in winners[:2]]
    not_held = post_json(cancel, {"event_id": five_seats, "user_id": "never-booked"})
    key = {"Idempotency-Key": uuid.uuid4().hex}
    retried = [post_json(reserve, {"event_id": roomy, "user_id": "retry"}, key) for _ in range(2)]
    invalid = post_json(reserve, {"event_id": "1", "user_id": "u"})

    after = scrape(url)
    reserves = race + again + missing + retried + [invalid]
    statuses = Counter(r.status_code for r in reserves)
    errors = Counter(r.json().get("error") for r in reserves)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (len(winners), statuses[201]) == (5, 7)  # five seats; a booking and its replay
    assert delta("bookings_made_total") == 6
    assert delta("bookings_cancelled_total") == len(cancels) == 2
    assert delta("bookings_refused_total", action="reserve", reason="sold_out") == 3
    assert delta("bookings_refused_total", action="reserve", reason="already_booked") == 2
    assert delta("bookings_refused_total", action="reserve", reason="event_not_found") == 3
    assert delta("bookings_refused_total", action="cancel", reason="booking_not_found") == 1
    assert not_held.status_code == 404
    assert delta("bookings_replayed_total", action="reserve") == 1
    assert (errors["sold_out"], errors["already_booked"], errors["event_not_found"]) == (3, 2, 3)

    route = RESERVE
    for status, count in statuses.items():
        assert delta("http_requests_total", method="POST", route=route, status=str(status)) == count
    assert delta("http_request_duration_seconds_count", method="POST", route=route) == len(reserves)
    assert invalid.status_code == 422


def test_a_dead_workers_counts_stay_and_its_connection_goes(metered, make_event):
    url = metered.url
    spread_over_workers(url, make_event(1))
    post_json(f"{url}{RESERVE}", {"event_id": make_event(1), "user_id": "u"})
    before = scrape(url)
    victim = int(sorted(connected_pids(before))[0])

    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while victim in metered.worker_pids() or len(metered.worker_pids()) < WORKERS:
        assert time.monotonic() < deadline, "gunicorn did not replace the worker"
        time.sleep(0.05)

    after = scrape(url)
    assert str(victim) not in connected_pids(after)
    assert value(after, "bookings_made_total") == value(before, "bookings_made_total") >= 1


def test_database_failures_are_counted():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/booking"
    client = create_app(Config(database_url=url, db_connect_timeout_s=1)).test_client()
    before = REGISTRY.get_sample_value("db_errors_total")
    assert client.get("/ready").status_code == 503
    assert REGISTRY.get_sample_value("db_errors_total") == before + 1


def test_rows_that_pile_up_are_counted_at_scrape_time(metered, make_event, sql):
    url = metered.url
    event_id = make_event(10)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    post_json(f"{url}/api/bookings/reserve", {"event_id": event_id, "user_id": "kept"}, key)
    post_json(f"{url}/api/bookings/cancel", {"event_id": event_id, "user_id": "kept"})
    sql(
        "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key = %s",
        (key["Idempotency-Key"],),
    )
    samples = scrape(url)
    ((cancelled, keys, expired),) = sql(
        "SELECT (SELECT count(*) FROM cancelled_bookings), (SELECT count(*) FROM idempotency_keys),"
        " (SELECT count(*) FROM idempotency_keys WHERE created_at < now() - interval '1 day')"
    )
    assert cancelled >= 1 and expired >= 1
    assert value(samples, "cancelled_bookings") == cancelled
    assert value(samples, "idempotency_keys") == keys
    assert value(samples, "idempotency_keys_expired") == expired


def test_recycled_workers_leave_no_files_and_their_counts_stay(start_gunicorn, tmp_path):
    """Every worker is replaced after 5 requests: 400 requests recycle about 80 of them."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    server = start_gunicorn(
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "GUNICORN_MAX_REQUESTS": "5"},
        workers=2,
    )
    health = {"method": "GET", "route": "/health", "status": "200"}
    before = value(scrape(server.url), "http_requests_total", **health)
    requests_sent = 400
    answered = 0
    for _ in range(requests_sent):  # one at a time: a recycling worker may drop a connection
        for _attempt in range(5):
            try:
                requests.get(f"{server.url}/health", timeout=10)
                answered += 1
                break
            except requests.ConnectionError:
                continue
    assert answered == requests_sent

    def files() -> list[str]:
        return sorted(p.name for p in metrics_dir.glob("*.db"))

    def settled() -> bool:
        # A counter, histogram and gauge file per live worker and the two archives: none
        # left by the dead ones.
        return len(files()) <= 2 * 3 + 2

    deadline = time.monotonic() + 30
    while not settled():
        assert time.monotonic() < deadline, files()
        time.sleep(0.05)
    after = value(scrape(server.url), "http_requests_total", **health)
    assert after - before == requests_sent
    assert {"counter_archive.db", "histogram_archive.db"} <= set(files())


def test_the_sale_is_counted_from_the_tables(metered, make_event, sql, start_worker):
    """Holds settled by any process are counted once: the counts come from PostgreSQL."""
    url = metered.url
    before = scrape(url)
    event_id = make_event(1)
    held = post_json(f"{url}/api/holds", {"event_id": event_id, "user_id": "h1"}).json()
    requests.post(f"{url}/api/holds/{held['hold_id']}/confirm", timeout=10)
    post_json(f"{url}{EVENTS}/{event_id}/waitlist", {"user_id": "w1"})
    post_json(f"{url}{CANCEL}", {"event_id": event_id, "user_id": "h1"})
    sql("UPDATE holds SET expires_at = now() WHERE event_id = %s AND status = 'held'", (event_id,))
    started = time.time()
    start_worker()
    wait_for(
        lambda: value(scrape(url), "worker_last_run_timestamp_seconds") >= int(started),
        "the worker to finish a pass",
    )
    after = scrape(url)

    def grew(name: str) -> float:
        return value(after, name) - value(before, name)

    assert (grew("holds_made_total"), grew("holds_confirmed_total")) == (1, 1)
    assert (grew("waitlist_offers_total"), grew("holds_expired_total")) == (1, 1)
    assert value(after, "waitlist_waiting") == sql("SELECT sum(waiting) FROM event_seats")[0][0]
