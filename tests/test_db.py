"""The per-worker connection: timeouts, terminated backends and a restarted PostgreSQL."""

import psycopg2

from booking import create_app
from booking.config import Config
from harness.http import EVENTS, RESERVE


def test_ready_and_bookings_follow_a_database_restart(private_pg):
    url = private_pg.database_url
    client = create_app(Config(database_url=url, db_connect_timeout_s=2)).test_client()
    [event_id] = private_pg.make_events(10)
    assert client.get("/ready").status_code == 200
    assert client.post(RESERVE, json={"event_id": event_id, "user_id": "a"}).status_code == 201

    private_pg.stop("fast")
    response = client.get("/ready")
    assert (response.status_code, response.get_json()) == (
        503,
        {"status": "not_ready", "reason": "db"},
    )
    response = client.post(RESERVE, json={"event_id": event_id, "user_id": "b"})
    assert (response.status_code, response.get_json()) == (503, {"error": "db_unavailable"})

    private_pg.start()
    # The very next request works: the dead connection is noticed and replaced.
    response = client.post(RESERVE, json={"event_id": event_id, "user_id": "b"})
    assert response.status_code == 201
    assert client.get("/ready").status_code == 200


def test_terminated_backend_is_replaced_without_an_error(client, make_event, sql):
    event_id = make_event(5)
    assert client.get(f"{EVENTS}/{event_id}").status_code == 200
    # The timeout makes it wait until each backend has gone.
    terminated = sql(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name LIKE 'booking:%%'"
        " AND pid <> pg_backend_pid()"
    )
    assert terminated and all(row[0] for row in terminated)
    response = client.post(RESERVE, json={"event_id": event_id, "user_id": "a"})
    assert response.status_code == 201


def test_statement_timeout_answers_503_and_frees_the_worker(config, make_event, database_url):
    client = create_app(
        Config(database_url=database_url, db_statement_timeout_ms=200)
    ).test_client()
    event_id = make_event(5)
    holder = psycopg2.connect(database_url)
    holder.cursor().execute("SELECT lock_event(%s)", (event_id,))
    try:
        response = client.post(RESERVE, json={"event_id": event_id, "user_id": "a"})
        assert (response.status_code, response.get_json()) == (503, {"error": "db_unavailable"})
    finally:
        holder.close()
    response = client.post(RESERVE, json={"event_id": event_id, "user_id": "a"})
    assert response.status_code == 201
