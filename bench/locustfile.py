"""The original design's "bookingarmy": 200 new users a second for 10 seconds, one event.

Every user books one seat for the same event once, as a crowd does when sales open, and
then stays idle; the army stops growing at 2,000 users. Outcomes are counted as 201
(booked), 409 (sold out or already booked) and other; the totals are printed at the end.

    pip install locust
    locust -f bench/locustfile.py --host http://127.0.0.1:3000            # web UI on :8089
    locust -f bench/locustfile.py --host http://127.0.0.1:3000 --headless
    BOOKING_EVENT_ID=2 locust -f bench/locustfile.py --host ...           # another event

The default event is 1, the seeded "Opening night" with 100 seats: 100 users get a seat,
the other 1,900 are told sold_out.
"""

import os
import uuid
from collections import Counter

from locust import HttpUser, LoadTestShape, constant, events, task

EVENT_ID = int(os.environ.get("BOOKING_EVENT_ID", "1"))
USERS_PER_SECOND = 200
SECONDS = 10
outcomes: Counter[str] = Counter()


class Booker(HttpUser):
    # One booking per user: the first task runs at once, then the user waits it out.
    wait_time = constant(3600)

    @task
    def reserve(self) -> None:
        body = {"event_id": EVENT_ID, "user_id": f"army-{uuid.uuid4()}"}
        with self.client.post(
            "/api/bookings/reserve", json=body, name="reserve", catch_response=True
        ) as response:
            if response.status_code in (201, 409):
                outcomes[str(response.status_code)] += 1
                response.success()
            else:
                outcomes["other"] += 1
                response.failure(f"unexpected status {response.status_code}")


class BookingArmy(LoadTestShape):
    """Grow by 200 users a second up to 2,000, then give the last ones time to finish."""

    def tick(self) -> tuple[int, float] | None:
        if self.get_run_time() > SECONDS + 5:
            return None
        return USERS_PER_SECOND * SECONDS, USERS_PER_SECOND


@events.test_stop.add_listener
def print_outcomes(**_: object) -> None:
    total = sum(outcomes.values())
    print(
        f"bookingarmy on event {EVENT_ID}: {total} requests, "
        f"201: {outcomes['201']}, 409: {outcomes['409']}, other: {outcomes['other']}"
    )
