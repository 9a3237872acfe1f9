"""An event's active bookings (admin): a page at a time as JSON, or all of them as CSV."""

import csv
import io
import itertools
from collections.abc import Iterator

from flask import Blueprint, Response, request

from booking.auth.policy import admin_required
from booking.db import get_db
from booking.http import apidoc
from booking.http.errors import ApiError
from booking.http.schemas import PageQuerySchema
from booking.resources import Resource
from booking.resources.bookings import BookingListSchema, page

bp = Blueprint("event_bookings", __name__, url_prefix="/api/events")

EVENT_EXISTS = "SELECT EXISTS (SELECT 1 FROM events WHERE id = %s) AS found"

# Through the (event_id, id) index from `after`; limit + 1 rows tell whether more exist.
LIST_EVENT_BOOKINGS_AFTER = """
SELECT booking_json(id, event_id, user_id, created_at)
       || jsonb_build_object('status', 'active', 'cancelled_at', NULL) AS booking
FROM bookings
WHERE event_id = %s AND id > %s
ORDER BY id
LIMIT %s
"""

# Every active booking of the event, read by the export's server-side cursor.
EXPORT_EVENT_BOOKINGS = """
SELECT id, user_id, utc_timestamp_text(created_at) FROM bookings
WHERE event_id = %s
ORDER BY id
"""

CSV = "text/csv"
CSV_HEADER = ("booking_id", "user_id", "created_at")
# Rows per FETCH, and so per chunk of the response: 86 KB for short user ids.
EXPORT_BATCH_ROWS = 2000
# A spreadsheet reads a cell that starts with one of these as a formula (OWASP's CSV
# injection): the user id is written with a ' in front, which shows it as text.
FORMULA_STARTS = ("=", "+", "-", "@")
CSV_EXAMPLE = (
    "booking_id,user_id,created_at\r\n"
    "42,alice,2025-10-13T12:34:56.000Z\r\n"
    '43,"o\'brien, pat",2025-10-13T12:35:02.117Z\r\n'
)


def neutralised(user_id: str) -> str:
    return "'" + user_id if user_id.startswith(FORMULA_STARTS) else user_id


def csv_chunks(batches: Iterator[list[tuple]]) -> Iterator[bytes]:
    """The header and one chunk per batch, RFC 4180 (quoted where needed, CRLF)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for batch in batches:
        writer.writerows((booking_id, neutralised(user), at) for booking_id, user, at in batch)
        if buffer.tell():
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()


def export(event_id: int) -> Response:
    """Streamed from a server-side cursor: memory holds one batch, however big the event.

    The event is looked up and the first batch read before the response starts, so an
    unknown event is a 404 and a database down a 503, both JSON; a failure later can only
    cut the response short, which the client sees as a chunked body never finished.
    """
    db = get_db()
    batches = db.stream(EXPORT_EVENT_BOOKINGS, (event_id,), EXPORT_BATCH_ROWS)
    try:
        first = next(batches)
        if not first and not db.fetch_one(EVENT_EXISTS, (event_id,))["found"]:
            raise ApiError(404, "event_not_found")
    except BaseException:
        batches.close()  # the stream's transaction ends here, not when collected
        raise
    chunks = csv_chunks(itertools.chain([first], batches))
    response = Response(chunks, content_type=f"{CSV}; charset=utf-8")
    # The server closes the response when it is sent, the client went away or it was a
    # HEAD: the stream's transaction ends then.
    response.call_on_close(batches.close)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="event-{event_id}-bookings.csv"'
    )
    return response


@bp.get("/<id:event_id>/bookings")
@apidoc.doc("An event's active bookings in id order, or all of them as CSV (admin)", tag="events")
@apidoc.path_id("event_id", "event")
@apidoc.alternative(
    200,
    CSV,
    {
        "schema": {
            "type": "string",
            "description": "With `Accept: text/csv`: every active booking, `limit` and"
            " `after` aside. A header row, then `booking_id,user_id,created_at` in id order;"
            " RFC 4180 quoting, CRLF; a user id starting with = + - or @ has a ' in front.",
        },
        "example": CSV_EXAMPLE,
    },
)
@apidoc.response(200, "One page; `next_after` is null on the last.", BookingListSchema)
@apidoc.other_responses({404: apidoc.error("No such event.", "event_not_found")})
@admin_required
@apidoc.query(PageQuerySchema())
def index(query: dict, event_id: int) -> Response | dict:
    if request.accept_mimetypes.best_match(["application/json", CSV]) == CSV:
        return export(event_id)
    db = get_db()
    rows = db.fetch_all(LIST_EVENT_BOOKINGS_AFTER, (event_id, query["after"], query["limit"] + 1))
    if not rows and not db.fetch_one(EVENT_EXISTS, (event_id,))["found"]:
        raise ApiError(404, "event_not_found")
    return page(rows, query["limit"])


RESOURCE = Resource(bp, ids={"event_id": "event_not_found"}, admin=("GET",))
