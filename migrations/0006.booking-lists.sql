-- depends: 0005.sale
--
-- The lists read a user's bookings (active and cancelled) and an event's active bookings
-- in id order, a page at a time: each page is an index range scan from `after`, never a
-- sort of everything the user or the event has.

CREATE INDEX bookings_user_id ON bookings (user_id, id);
CREATE INDEX cancelled_bookings_user_id ON cancelled_bookings (user_id, id);
CREATE INDEX bookings_event_id ON bookings (event_id, id);
