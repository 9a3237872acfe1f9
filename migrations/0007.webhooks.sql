-- depends: 0006.booking-lists
--
-- Webhooks: the subscriptions, and the transactional outbox of their messages. Each change
-- the functions make writes one message per active webhook that subscribes to its type, in
-- the change's own transaction (emit_webhook); the worker delivers them (booking.jobs.webhooks).

CREATE TABLE webhooks (
    id SERIAL PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT[] NOT NULL CHECK (cardinality(events) > 0),
    -- whsec_ + base64: the key the messages are signed with (Standard Webhooks).
    secret TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at TIMESTAMPTZ,
    -- Deleted webhooks are kept, inactive, with the record of their messages: the counts
    -- on /metrics never go back.
    deleted_at TIMESTAMPTZ,
    -- A worker delivering this webhook's messages holds it until then: one delivery slot
    -- per webhook at a time; a killed worker's claim lapses by itself.
    busy_until TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);

-- One row per message and webhook: message_id is 'msg_' || id. next_attempt_at is set
-- while the message waits to be sent, NULL once delivered, failed, or dropped (its webhook
-- deleted).
CREATE TABLE webhook_messages (
    id BIGSERIAL PRIMARY KEY,
    webhook_id INT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    type TEXT NOT NULL,
    data JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    attempts INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ DEFAULT clock_timestamp(),
    last_status INT,
    last_error TEXT,
    delivered_at TIMESTAMPTZ,
    failed_at TIMESTAMPTZ
);

-- A webhook's deliveries newest first; a webhook's messages waiting, by when they are due
-- (the worker's claim reads these only, however many were delivered before).
CREATE INDEX webhook_messages_by_webhook ON webhook_messages (webhook_id, id);
CREATE INDEX webhook_messages_waiting ON webhook_messages (webhook_id, next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
