-- pgbench: the booking SQL the service sends, straight to PostgreSQL, one call per
-- transaction (autocommit), on one event given with -D event_id=N.
\set user random(1, 2000000000)
SELECT status, body, replayed FROM reserve_seat(:event_id, 'pgbench-' || :client_id || '-' || :user, NULL, NULL, 86400, 3600);
