"""The database host dies under a load of bookings, and pg_auto_failover promotes the
standby within 20 s: nothing the clients were told is lost, nothing is booked twice.

The service reaches the pair through one several-host URL with
target_session_attrs=read-write, and finds the new primary by itself. Synchronous
replication means a 201 is only sent once the standby has the booking. The old primary
then comes back, rejoins as a standby (pg_autoctl rewinds it), and the pair fails over
the other way under the same checks. Before that, the primary's network is cut for a few
seconds, and the pair must ride it out without failing over. The monitor runs with
deploy/pg_auto_failover-monitor.conf. About two minutes: `make chaos`.
"""

import os
import subprocess
import sys

import pytest
from cluster import PgAutoFailover

from harness import ROOT, report, wait_for
from harness.clients import Load
from harness.database import make_events, sql
from harness.invariants import check_bookings
from harness.servers import Gunicorn

pytestmark = pytest.mark.chaos

CLIENTS = 8
WORKERS = 4
# Enough bookings on each side of the kill to see the service before and after it.
BOOKINGS_BEFORE = 100
BOOKINGS_AFTER = 100
# Ten roomy events and one that sells out during the run.
SEATS = [1000] * 10 + [40]
# From the kill to the first booking on the new primary, at most (the bound).
FAILOVER_BOUND_S = 20
# A cut of the primary's network the pair rides out.
HICCUP_S = 3
# The states of a failover's path: the monitor assigns none of them on a hiccup.
FAILOVER_STATES = {
    "draining", "demote_timeout", "demoted", "prepare_promotion", "stop_replication",
    "report_lsn",
}  # fmt: skip


@pytest.fixture(scope="module")
def ha():
    cluster = PgAutoFailover()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
        assert not cluster.net.leftovers(), "the test's hosts or processes outlived it"


@pytest.fixture(scope="module")
def service(ha, start_gunicorn) -> Gunicorn:
    """The service on the pair's URL, its database set up with the operator commands."""
    assert "the schema is up to date" in flask(ha.url, "migrate")
    assert "seed: 3 new events" in flask(ha.url, "seed")
    assert "purged 0 expired" in flask(ha.url, "purge-idempotency-keys")
    return start_gunicorn(
        env={
            "DATABASE_URL": ha.url,
            "DB_CONNECT_TIMEOUT_S": "2",
            "DB_STATEMENT_TIMEOUT_MS": "1500",
        },
        workers=WORKERS,
    )


def flask(database_url: str, *args: str) -> str:
    """An operator command, run as an operator runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def serving_node(ha: PgAutoFailover) -> str:
    """The node the service's URL reaches now."""
    (port,) = sql(ha.url, "SELECT inet_server_port()")[0]
    return next(name for name in ha.NODES if ha.ports[name] == port)


def failover_goals(ha: PgAutoFailover, since_event: int) -> list[tuple[str, str]]:
    """The steps of a failover the monitor has assigned since the event."""
    return [(n, goal) for n, goal in ha.goal_states_since(since_event) if goal in FAILOVER_STATES]


def fail_over(ha: PgAutoFailover, url: str, old: str, new: str) -> dict[str, object]:
    assert serving_node(ha) == old
    setting, *standbys = ha.synchronous_standbys(old)
    assert setting and standbys == ["quorum"], (setting, standbys)  # ANY 1 (<standby>)
    event_ids = make_events(ha.url, *SEATS)
    with Load(url, event_ids, CLIENTS) as load:
        wait_for(lambda: load.ledger.booked_since(0) >= BOOKINGS_BEFORE, "bookings", 120)
        killed_at = ha.kill_host(old)
        wait_for(
            lambda: load.ledger.booked_since(killed_at) >= BOOKINGS_AFTER,
            f"bookings after the kill; monitor: {ha.states()}",
            300,
        )
    figures = load.ledger.outage(killed_at)
    assert serving_node(ha) == new
    problems = check_bookings(ha.url, event_ids, load.ledger)
    assert not problems, problems[:20]

    ha.restart(old)
    ha.wait_for_states({new: "primary", old: "secondary"})
    bookings = "SELECT id FROM bookings WHERE event_id = ANY(%s) ORDER BY id"
    wait_for(
        lambda: (
            sql(ha.node_url(old), bookings, (event_ids,)) == sql(ha.url, bookings, (event_ids,))
        ),
        "the rejoined standby to hold every booking",
        60,
    )
    statuses = load.ledger.statuses()
    return {
        **figures,
        "bookings": len(load.ledger.requests),
        "answered_201": statuses[201],
        "answered_409": statuses[409],
        "answered_503_total": statuses[503],
    }


def test_no_failover_on_a_short_network_cut(ha, service):
    """The primary's link is down for HICCUP_S under load: bookings wait (503s), then go
    on on the same primary; the monitor starts no failover; nothing is lost."""
    ha.wait_for_states({"a": "primary", "b": "secondary"})
    event_ids = make_events(ha.url, *SEATS)
    before = ha.last_event()
    try:
        with Load(service.url, event_ids, CLIENTS) as load:
            wait_for(lambda: load.ledger.booked_since(0) >= BOOKINGS_BEFORE, "bookings", 120)
            cut_at, back_at = ha.cut_off("a", HICCUP_S)
            wait_for(
                lambda: load.ledger.booked_since(back_at) >= BOOKINGS_AFTER,
                f"bookings after the cut; monitor: {ha.states()}",
                120,
            )
        figures = load.ledger.outage(cut_at)
        report(f"network cut of {HICCUP_S} s", clients=CLIENTS, **figures)
        # The cut was real: the clients saw the primary gone.
        assert figures["answered_503"] > 0, figures
        assert not failover_goals(ha, before), ha.goal_states_since(before)
        ha.wait_for_states({"a": "primary", "b": "secondary"}, timeout=60)
        assert not failover_goals(ha, before), ha.goal_states_since(before)
        assert serving_node(ha) == "a"
        problems = check_bookings(ha.url, event_ids, load.ledger)
        assert not problems, problems[:20]
    except AssertionError:
        print(ha.logs())
        raise


def test_failover_under_load_both_ways(ha, service):
    outages = {}
    for old, new in [("a", "b"), ("b", "a")]:
        try:
            figures = fail_over(ha, service.url, old, new)
        except AssertionError:
            print(ha.logs())
            raise
        report(f"failover {old}->{new}", clients=CLIENTS, **figures)
        outages[f"{old}->{new}"] = figures["seconds_to_first_201"]
    assert all(seconds <= FAILOVER_BOUND_S for seconds in outages.values()), outages
