DROP INDEX bookings_event_id;
DROP INDEX cancelled_bookings_user_id;
DROP INDEX bookings_user_id;
