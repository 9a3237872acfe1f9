-- The triggers of functions/ that write event_seats go with it.
DROP TRIGGER IF EXISTS bookings_count_seats ON bookings;
DROP TRIGGER IF EXISTS events_add_seats ON events;
DROP TABLE idempotency_keys;
DROP TABLE event_seats;
