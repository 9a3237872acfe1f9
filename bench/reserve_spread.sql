-- pgbench: reserve.sql's call on an event drawn at random between -D first_event=N and
-- -D last_event=M for each transaction: bookings spread over many events, no lock shared.
\set event_id random(:first_event, :last_event)
\set user random(1, 2000000000)
SELECT status, body, replayed FROM reserve_seat(:event_id, 'pgbench-' || :client_id || '-' || :user, NULL, NULL, 86400, 3600);
