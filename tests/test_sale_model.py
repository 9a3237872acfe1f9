"""The sale against a model of its contract: random sequences of reserve, hold, confirm,
release, cancel, join, leave, PATCH and waiting for expiry, sent to a real multi-worker
gunicorn, every answer and every availability read compared with what the model says.

The model keeps each hold with its expires_at as the server reported it. The server decides
at an instant between sending and receiving; when a hold's expiry falls in that span the
model cannot know which side it was on, so it accepts the outcome of any instant in the span
and then reads the event's waiting-list entries back from the server (resync). Before each
request an expiry due within GUARD is waited out, so this stays rare. No worker runs: the
requests settle expiries themselves, and seats freed by time are offered by the next change
of the event.

`make model` runs more examples (SALE_MODEL_EXAMPLES).
"""

import copy
import datetime
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import requests
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from harness import report, wait_for
from harness.database import create_database, drop_database
from harness.http import ADMIN, CANCEL, EVENTS, RESERVE

HOLDS = "/api/holds"
HOLD_SECONDS = 1
OFFER_SECONDS = 2
EXAMPLES = int(os.environ.get("SALE_MODEL_EXAMPLES", "15"))
STEPS = int(os.environ.get("SALE_MODEL_STEPS", "25"))

USERS = ("ann", "bob", "cid")
MISSING_EVENT = 2_147_483_647
MISSING_HOLD = 2_147_483_647
# One draw in ten names an event or hold that does not exist.
MISSES = st.sampled_from((False,) * 9 + (True,))
# The server's timestamps are text with milliseconds; its clock is this machine's.
SLACK = datetime.timedelta(milliseconds=3)
GUARD = datetime.timedelta(milliseconds=100)
# Far from now, so a window's bounds never make the model uncertain.
STARTS = (None, None, "2000-01-01T00:00:00.000Z", "2100-01-01T00:00:00.000Z")
ENDS = (None, None, "2000-06-01T00:00:00.000Z", "2100-06-01T00:00:00.000Z")


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def parse(text: str | None) -> datetime.datetime | None:
    return None if text is None else datetime.datetime.fromisoformat(text)


@dataclass
class Hold:
    hold_id: int  # negative: an offer the server made whose id is not learned yet
    event_id: int
    user: str
    expires_at: datetime.datetime
    status: str = "held"  # held (live until expires_at), confirmed, released, expired
    booking_id: int | None = None
    entry_id: int | None = None


@dataclass
class Entry:
    entry_id: int
    event_id: int
    user: str
    status: str = "waiting"  # waiting, offered, booked, expired, left
    hold_id: int | None = None


@dataclass
class Event:
    event_id: int
    total: int
    start: str | None = None
    end: str | None = None
    bookings: dict[str, int] = field(default_factory=dict)


@dataclass
class Expect:
    status: int
    error: str | None = None
    fields: dict = field(default_factory=dict)

    def problem(self, response: requests.Response) -> str | None:
        body = response.json()
        if response.status_code != self.status or body.get("error") != self.error:
            return f"expected {self.status} {self.error}, got {response.status_code} {body}"
        wrong = {k: body.get(k) for k, v in self.fields.items() if body.get(k) != v}
        return f"expected fields {self.fields}, got {wrong}" if wrong else None


class Sale:
    """The contract's sale, at a given instant: what a request decided then would do."""

    def __init__(self) -> None:
        self.events: dict[int, Event] = {}
        self.holds: dict[int, Hold] = {}
        self.entries: dict[int, Entry] = {}

    def event_holds(self, event_id: int) -> list[Hold]:
        return [h for h in self.holds.values() if h.event_id == event_id]

    def waiting(self, event_id: int) -> list[Entry]:
        return sorted(
            (e for e in self.entries.values() if e.event_id == event_id and e.status == "waiting"),
            key=lambda e: e.entry_id,
        )

    def held(self, event_id: int, now: datetime.datetime) -> int:
        return sum(
            1 for h in self.event_holds(event_id) if h.status == "held" and now < h.expires_at
        )

    def live_hold(self, event_id: int, user: str, now: datetime.datetime) -> Hold | None:
        return next(
            (
                h
                for h in self.event_holds(event_id)
                if h.user == user and h.status == "held" and now < h.expires_at
            ),
            None,
        )

    def window_open(self, event: Event, now: datetime.datetime) -> bool:
        start, end = parse(event.start), parse(event.end)
        return (start is None or start <= now) and (end is None or end > now)

    def seats(self, event_id: int, now: datetime.datetime) -> dict:
        event = self.events[event_id]
        booked, held = len(event.bookings), self.held(event_id, now)
        return {
            "event_id": event_id,
            "total_seats": event.total,
            "booked": booked,
            "held": held,
            "waiting": len(self.waiting(event_id)),
            "left": max(event.total - booked - held, 0),
        }

    def settle(self, event_id: int, now: datetime.datetime) -> None:
        """Expired holds marked (an offer's entry with them), then free seats offered in
        entry order while the window is open."""
        event = self.events.get(event_id)
        if event is None:
            return
        for hold in self.event_holds(event_id):
            if hold.status == "held" and hold.expires_at <= now:
                hold.status = "expired"
                if hold.entry_id is not None and self.entries[hold.entry_id].status == "offered":
                    self.entries[hold.entry_id].status = "expired"
        if not self.window_open(event, now):
            return
        free = max(event.total - len(event.bookings) - self.held(event_id, now), 0)
        for entry in self.waiting(event_id)[:free]:
            offer = Hold(
                -entry.entry_id,
                event_id,
                entry.user,
                now + datetime.timedelta(seconds=OFFER_SECONDS),
                entry_id=entry.entry_id,
            )
            self.holds[offer.hold_id] = offer
            entry.status, entry.hold_id = "offered", offer.hold_id

    def refusal(self, event_id: int, user: str, now: datetime.datetime) -> str | None:
        event = self.events.get(event_id)
        if event is None:
            return "event_not_found"
        if user in event.bookings:
            return "already_booked"
        if self.live_hold(event_id, user, now):
            return "already_held"
        if event.start is not None and parse(event.start) > now:
            return "sales_not_started"
        if event.end is not None and parse(event.end) <= now:
            return "sales_ended"
        seats = self.seats(event_id, now)
        if seats["waiting"] > 0 or seats["left"] == 0:
            return "sold_out"
        return None

    # Each change below mutates this model as the request would have at `now`, learning the
    # server's new ids from `body` when the answer is the one expected.

    def reserve(self, event_id: int, user: str, now, body: dict) -> Expect:
        self.settle(event_id, now)
        refusal = self.refusal(event_id, user, now)
        if refusal:
            return Expect(404 if refusal == "event_not_found" else 409, refusal)
        self.events[event_id].bookings[user] = body.get("booking_id")
        return Expect(201, fields={"event_id": event_id, "user_id": user})

    def hold(self, event_id: int, user: str, now, body: dict) -> Expect:
        self.settle(event_id, now)
        refusal = self.refusal(event_id, user, now)
        if refusal:
            return Expect(404 if refusal == "event_not_found" else 409, refusal)
        if "hold_id" in body:
            self.holds[body["hold_id"]] = Hold(
                body["hold_id"], event_id, user, parse(body["expires_at"])
            )
        fields = {"event_id": event_id, "user_id": user, "status": "held"}
        return Expect(201, fields={**fields, "booking_id": None, "released_at": None})

    def closed(self, hold: Hold) -> Expect:
        if hold.status == "confirmed":
            return Expect(409, "hold_confirmed", {"booking_id": hold.booking_id})
        return Expect(409, f"hold_{hold.status}")

    def confirm(self, hold_id: int, now, body: dict) -> Expect:
        hold = self.holds.get(hold_id)
        if hold is None:
            return Expect(404, "hold_not_found")
        self.settle(hold.event_id, now)
        if hold.status != "held":
            return self.closed(hold)
        hold.status, hold.booking_id = "confirmed", body.get("booking_id")
        self.events[hold.event_id].bookings[hold.user] = hold.booking_id
        if hold.entry_id is not None:
            self.entries[hold.entry_id].status = "booked"
        return Expect(201, fields={"event_id": hold.event_id, "user_id": hold.user})

    def release(self, hold_id: int, now, body: dict) -> Expect:
        hold = self.holds.get(hold_id)
        if hold is None:
            return Expect(404, "hold_not_found")
        self.settle(hold.event_id, now)
        if hold.status != "held":
            return self.closed(hold)
        hold.status = "released"
        if hold.entry_id is not None:
            self.entries[hold.entry_id].status = "left"
        self.settle(hold.event_id, now)
        return Expect(200, fields={"hold_id": hold_id, "status": "released"})

    def cancel(self, event_id: int, user: str, now, body: dict) -> Expect:
        event = self.events.get(event_id)
        if event is None:
            return Expect(404, "event_not_found")
        if user not in event.bookings:
            return Expect(404, "booking_not_found")  # nothing changes: no settling either
        booking_id = event.bookings.pop(user)
        self.settle(event_id, now)
        return Expect(200, fields={"booking_id": booking_id, "user_id": user})

    def join(self, event_id: int, user: str, now, body: dict) -> Expect:
        self.settle(event_id, now)
        refusal = self.refusal(event_id, user, now) or "seats_available"
        if refusal == "sold_out" and any(
            e.user == user and e.status in ("waiting", "offered")
            for e in self.entries.values()
            if e.event_id == event_id
        ):
            refusal = "already_waiting"
        if refusal != "sold_out":
            return Expect(404 if refusal == "event_not_found" else 409, refusal)
        if "entry_id" in body:
            self.entries[body["entry_id"]] = Entry(body["entry_id"], event_id, user)
        position = len(self.waiting(event_id))
        fields = {"user_id": user, "status": "waiting", "position": position, "hold_id": None}
        return Expect(201, fields=fields)

    def leave(self, url_event_id: int, entry_id: int, now, body: dict) -> Expect:
        entry = self.entries[entry_id]
        if entry.event_id != url_event_id:
            return Expect(404, "entry_not_found")
        self.settle(entry.event_id, now)
        if entry.status not in ("waiting", "offered"):
            return Expect(409, "entry_closed")
        if entry.hold_id is not None and self.holds[entry.hold_id].status == "held":
            self.holds[entry.hold_id].status = "released"
        entry.status = "left"
        self.settle(entry.event_id, now)
        return Expect(200, fields={"entry_id": entry_id, "status": "left"})

    def patch(self, event_id: int, changes: dict, now, body: dict) -> Expect:
        self.settle(event_id, now)
        event = self.events[event_id]
        total = changes.get("total_seats", event.total)
        start = changes.get("sales_start", event.start)
        end = changes.get("sales_end", event.end)
        if start is not None and end is not None and parse(end) <= parse(start):
            return Expect(422, "validation_error")
        seats = self.seats(event_id, now)
        if total < seats["booked"] + seats["held"]:
            return Expect(409, "seats_below_taken")
        event.total, event.start, event.end = total, start, end
        self.settle(event_id, now)
        fields = {**self.seats(event_id, now), "sales_start": start, "sales_end": end}
        return Expect(200, fields=fields)

    # Reads: what the server shows at `now`, changing nothing.

    def hold_view(self, hold_id: int, now) -> Expect:
        hold = self.holds[hold_id]
        status = "expired" if hold.status == "held" and hold.expires_at <= now else hold.status
        return Expect(200, fields={"status": status, "booking_id": hold.booking_id})

    def entry_view(self, entry_id: int, now) -> Expect:
        entry = self.entries[entry_id]
        status = entry.status
        if status == "offered" and self.holds[entry.hold_id].expires_at <= now:
            status = "expired"
        position = None
        if status == "waiting":
            position = [e.entry_id for e in self.waiting(entry.event_id)].index(entry_id) + 1
        fields = {"status": status, "position": position}
        if entry.hold_id is not None and entry.hold_id > 0:
            fields["hold_id"] = entry.hold_id
        return Expect(200, fields=fields)


class SaleMachine(RuleBasedStateMachine):
    url: str = ""
    # Over the whole run: the answers by status, and the requests decided near an expiry.
    statuses: Counter = Counter()
    uncertain = 0
    examples = 0

    def __init__(self) -> None:
        super().__init__()
        self.http = requests.Session()
        self.model = Sale()
        SaleMachine.examples += 1

    def teardown(self) -> None:
        self.http.close()

    # ------------------------------------------------------------ driving

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.http.request(method, f"{self.url}{path}", timeout=30, **kwargs)

    def wait_out_near_expiries(self) -> None:
        """No request starts within GUARD before an expiry: it waits the expiry out."""
        now = utcnow()
        near = [
            h.expires_at
            for h in self.model.holds.values()
            if h.status == "held" and now - SLACK < h.expires_at <= now + GUARD
        ]
        if near:
            last = max(near) + SLACK
            wait_for(lambda: utcnow() > last, "the clock to pass an expiry", timeout=5)

    def decision_times(self, event_ids: list[int], sent, received) -> list:
        """The instants the server may have decided at that the model tells apart: the
        first, and each expiry that falls between sending and receiving."""
        uncertain = sorted(
            h.expires_at
            for h in self.model.holds.values()
            if h.event_id in event_ids
            and h.status == "held"
            and sent - SLACK < h.expires_at <= received + SLACK
        )
        return [sent - SLACK, *uncertain]

    def step(
        self,
        event_ids: list[int],
        send: Callable[[], requests.Response],
        predict: Callable[[Sale, datetime.datetime, dict], Expect],
    ) -> requests.Response:
        """Send, then adopt the first decision instant whose model predicts the answer."""
        self.wait_out_near_expiries()
        sent = utcnow()
        response = send()
        received = utcnow()
        assert response.headers["Content-Type"].startswith("application/json")
        body = response.json()
        times = self.decision_times(event_ids, sent, received)
        problems = []
        for now in times:
            world = copy.deepcopy(self.model)
            problem = predict(world, now, body).problem(response)
            if problem is None:
                self.model = world
                break
            problems.append(f"at {now.isoformat()}: {problem}")
        else:
            raise AssertionError("; ".join(problems))
        if len(times) > 1:
            SaleMachine.uncertain += 1
            for event_id in event_ids:
                self.resync(event_id)
        self.learn_offers(sent, received)
        SaleMachine.statuses[response.status_code] += 1
        return response

    def resync(self, event_id: int) -> None:
        """After an uncertain instant: the open entries of the event as the server has
        them (which offers were made and which expired); nothing else."""
        for entry in list(self.model.entries.values()):
            if entry.event_id != event_id or entry.status not in ("waiting", "offered"):
                continue
            body = self.request("GET", f"{EVENTS}/{event_id}/waitlist/{entry.entry_id}").json()
            assert body["status"] in ("waiting", "offered", "expired"), body
            if entry.hold_id is not None and entry.hold_id < 0:
                del self.model.holds[entry.hold_id]
                entry.hold_id = None
            if body["status"] == "waiting":
                assert entry.hold_id is None, (entry, body)
                entry.status = "waiting"
                continue
            entry.status = "offered"
            if body["hold_id"] not in self.model.holds:
                self.model.holds[body["hold_id"]] = Hold(
                    body["hold_id"],
                    event_id,
                    entry.user,
                    parse(body["expires_at"]),
                    entry_id=entry.entry_id,
                )
            entry.hold_id = body["hold_id"]

    def learn_offers(self, sent, received) -> None:
        """Offers the model says were just made: the server shows each entry offered, with
        a hold of WAITLIST_OFFER_SECONDS from the instant of the request."""
        for pending in [h for h in self.model.holds.values() if h.hold_id < 0]:
            entry = self.model.entries[pending.entry_id]
            body = self.request("GET", f"{EVENTS}/{entry.event_id}/waitlist/{entry.entry_id}")
            body = body.json()
            assert body["status"] == "offered" and body["hold_id"], (entry, body)
            offered_at = parse(body["expires_at"]) - datetime.timedelta(seconds=OFFER_SECONDS)
            assert sent - SLACK <= offered_at <= received + SLACK, (sent, body, received)
            del self.model.holds[pending.hold_id]
            pending.hold_id, pending.expires_at = body["hold_id"], parse(body["expires_at"])
            self.model.holds[pending.hold_id] = pending
            entry.hold_id = pending.hold_id

    # ------------------------------------------------------------ the rules

    @initialize(seats=st.integers(1, 3))
    def create_events(self, seats: int) -> None:
        """One event of one seat, where the queue forms soonest, and one of 1-3."""
        for total in (1, seats):
            response = self.request(
                "POST", EVENTS, json={"name": "model", "total_seats": total}, headers=ADMIN
            )
            assert response.status_code == 201, response.text
            body = response.json()
            expected = {"total_seats": total, "booked": 0, "held": 0, "waiting": 0, "left": total}
            assert {k: body[k] for k in expected} == expected
            assert (body["sales_start"], body["sales_end"]) == (None, None)
            self.model.events[body["event_id"]] = Event(body["event_id"], total)

    def event_ids(self) -> list[int]:
        return sorted(self.model.events)

    @rule(data=st.data(), user=st.sampled_from(USERS), missing=MISSES)
    def reserve(self, data, user: str, missing: bool) -> None:
        event_id = MISSING_EVENT if missing else data.draw(st.sampled_from(self.event_ids()))
        response = self.step(
            [event_id],
            lambda: self.request("POST", RESERVE, json={"event_id": event_id, "user_id": user}),
            lambda world, now, body: world.reserve(event_id, user, now, body),
        )
        if response.status_code == 201:
            booking_id = response.json()["booking_id"]
            assert response.headers["Location"] == f"/api/bookings/{booking_id}"

    @rule(data=st.data(), user=st.sampled_from(USERS))
    def hold(self, data, user: str) -> None:
        event_id = data.draw(st.sampled_from(self.event_ids()))
        response = self.step(
            [event_id],
            lambda: self.request("POST", HOLDS, json={"event_id": event_id, "user_id": user}),
            lambda world, now, body: world.hold(event_id, user, now, body),
        )
        if response.status_code == 201:
            body = response.json()
            assert response.headers["Location"] == f"{HOLDS}/{body['hold_id']}"
            created, expires = parse(body["created_at"]), parse(body["expires_at"])
            assert expires - created == datetime.timedelta(seconds=HOLD_SECONDS), body

    def hold_ids(self) -> list[int]:
        return sorted(self.model.holds)

    def draw_hold(self, data) -> int:
        """Mostly a hold not closed yet: confirming and releasing those is where seats move.
        (Draws never depend on the clock, so that hypothesis can replay an example.)"""
        live = [h.hold_id for h in self.open_holds()]
        if live and data.draw(st.integers(0, 3)):
            return data.draw(st.sampled_from(sorted(live)))
        return data.draw(st.sampled_from(self.hold_ids()))

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), missing=MISSES)
    def confirm(self, data, missing: bool) -> None:
        hold_id = MISSING_HOLD if missing else self.draw_hold(data)
        hold = self.model.holds.get(hold_id)
        response = self.step(
            [hold.event_id] if hold else [],
            lambda: self.request("POST", f"{HOLDS}/{hold_id}/confirm"),
            lambda world, now, body: world.confirm(hold_id, now, body),
        )
        if response.status_code == 201:
            booking_id = response.json()["booking_id"]
            assert response.headers["Location"] == f"/api/bookings/{booking_id}"
            shown = self.request("GET", f"{HOLDS}/{hold_id}").json()
            assert (shown["status"], shown["booking_id"]) == ("confirmed", booking_id)

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), missing=MISSES)
    def release(self, data, missing: bool) -> None:
        hold_id = MISSING_HOLD if missing else self.draw_hold(data)
        hold = self.model.holds.get(hold_id)
        response = self.step(
            [hold.event_id] if hold else [],
            lambda: self.request("DELETE", f"{HOLDS}/{hold_id}"),
            lambda world, now, body: world.release(hold_id, now, body),
        )
        if response.status_code == 200:
            assert response.json()["released_at"] is not None

    @rule(data=st.data(), user=st.sampled_from(USERS), missing=MISSES)
    def cancel(self, data, user: str, missing: bool) -> None:
        event_id = MISSING_EVENT if missing else data.draw(st.sampled_from(self.event_ids()))
        booked = sorted(self.model.events.get(event_id, Event(0, 0)).bookings)
        if booked and data.draw(st.integers(0, 3)):
            user = data.draw(st.sampled_from(booked))  # mostly a seat that comes back
        response = self.step(
            [event_id],
            lambda: self.request("POST", CANCEL, json={"event_id": event_id, "user_id": user}),
            lambda world, now, body: world.cancel(event_id, user, now, body),
        )
        if response.status_code == 200:
            assert response.json()["cancelled_at"] is not None

    @rule(data=st.data(), user=st.sampled_from(USERS), missing=MISSES)
    def join(self, data, user: str, missing: bool) -> None:
        event_id = MISSING_EVENT if missing else data.draw(st.sampled_from(self.event_ids()))
        response = self.step(
            [event_id],
            lambda: self.request("POST", f"{EVENTS}/{event_id}/waitlist", json={"user_id": user}),
            lambda world, now, body: world.join(event_id, user, now, body),
        )
        if response.status_code == 201:
            body = response.json()
            assert body["expires_at"] is None and body["event_id"] == event_id
            location = f"{EVENTS}/{event_id}/waitlist/{body['entry_id']}"
            assert response.headers["Location"] == location

    @precondition(lambda self: self.model.entries)
    @rule(data=st.data(), elsewhere=MISSES)
    def leave(self, data, elsewhere: bool) -> None:
        entry = self.model.entries[data.draw(st.sampled_from(sorted(self.model.entries)))]
        event_id = entry.event_id
        if elsewhere:
            event_id = next(e for e in self.event_ids() if e != entry.event_id)
        response = self.step(
            [entry.event_id],
            lambda: self.request("DELETE", f"{EVENTS}/{event_id}/waitlist/{entry.entry_id}"),
            lambda world, now, body: world.leave(event_id, entry.entry_id, now, body),
        )
        if response.status_code == 200:
            assert response.json()["event_id"] == entry.event_id

    @rule(data=st.data(), total=st.integers(0, 4))
    def patch_seats(self, data, total: int) -> None:
        self.patch(data.draw(st.sampled_from(self.event_ids())), {"total_seats": total})

    @rule(
        data=st.data(),
        window=st.fixed_dictionaries(
            {},
            optional={"sales_start": st.sampled_from(STARTS), "sales_end": st.sampled_from(ENDS)},
        ).filter(bool),
    )
    def patch_window(self, data, window: dict) -> None:
        self.patch(data.draw(st.sampled_from(self.event_ids())), window)

    def patch(self, event_id: int, changes: dict) -> None:
        self.step(
            [event_id],
            lambda: self.request("PATCH", f"{EVENTS}/{event_id}", json=changes, headers=ADMIN),
            lambda world, now, body: world.patch(event_id, changes, now, body),
        )

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def look_hold_up(self, data) -> None:
        hold_id = data.draw(st.sampled_from(self.hold_ids()))
        hold = self.model.holds[hold_id]
        self.step(
            [hold.event_id],
            lambda: self.request("GET", f"{HOLDS}/{hold_id}"),
            lambda world, now, body: world.hold_view(hold_id, now),
        )

    @precondition(lambda self: self.model.entries)
    @rule(data=st.data())
    def look_entry_up(self, data) -> None:
        entry = self.model.entries[data.draw(st.sampled_from(sorted(self.model.entries)))]
        self.step(
            [entry.event_id],
            lambda: self.request("GET", f"{EVENTS}/{entry.event_id}/waitlist/{entry.entry_id}"),
            lambda world, now, body: world.entry_view(entry.entry_id, now),
        )

    def open_holds(self) -> list[Hold]:
        return sorted(
            (h for h in self.model.holds.values() if h.status == "held"), key=lambda h: h.hold_id
        )

    @precondition(lambda self: self.open_holds())
    @rule(data=st.data())
    def wait_for_expiry(self, data) -> None:
        """Time passes: the clock is waited on until the hold's expires_at is behind it."""
        hold = data.draw(st.sampled_from(self.open_holds()))
        expiry = hold.expires_at + SLACK
        wait_for(lambda: utcnow() > expiry, "the hold's expiry", timeout=OFFER_SECONDS + 5)

    @invariant()
    def availability_is_as_modelled(self) -> None:
        for event_id in self.event_ids():
            self.step(
                [event_id],
                lambda event_id=event_id: self.request("GET", f"{EVENTS}/{event_id}/availability"),
                lambda world, now, body, event_id=event_id: Expect(
                    200, fields=world.seats(event_id, now)
                ),
            )

    @invariant()
    def never_more_taken_than_seats(self) -> None:
        now = utcnow()
        for event_id, event in self.model.events.items():
            assert len(event.bookings) + self.model.held(event_id, now) <= event.total
            users = [h.user for h in self.model.event_holds(event_id) if h.status == "held"]
            users = [u for u in users if self.model.live_hold(event_id, u, now)]
            assert not set(users) & set(event.bookings)


@pytest.fixture(scope="module")
def sale(server_url, start_gunicorn):
    """On a database of its own: another test's worker would offer the seats freed by time
    here, with its own offer length."""
    database_url = create_database(server_url, "booking_model")
    env = {
        "DATABASE_URL": database_url,
        "HOLD_SECONDS": str(HOLD_SECONDS),
        "WAITLIST_OFFER_SECONDS": str(OFFER_SECONDS),
    }
    server = start_gunicorn(env=env, workers=4)
    yield server
    server.stop()
    drop_database(server_url, database_url)


def test_the_sale_keeps_to_its_model(sale):
    SaleMachine.url = sale.url
    run_state_machine_as_test(
        SaleMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    report(
        "sale-model",
        examples=SaleMachine.examples,
        requests=sum(SaleMachine.statuses.values()),
        statuses=dict(sorted(SaleMachine.statuses.items())),
        decided_near_an_expiry=SaleMachine.uncertain,
    )
