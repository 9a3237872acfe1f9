-- pgbench: reserve.sql's call to reserve_seat_locked() (bench/reserve_seat_locked.sql), the
-- booking function as it was before refusals decided without the lock.
\set user random(1, 2000000000)
SELECT status, body, replayed FROM reserve_seat_locked(:event_id, 'pgbench-' || :client_id || '-' || :user, NULL, NULL, 86400, 3600);
