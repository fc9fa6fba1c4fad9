-- Streams and events: the append-only store and its global log.
-- __SCHEMA__ is replaced by the configured schema (a quoted identifier).

-- One row per stream, written when the stream is created and when it is deleted. A stream's
-- current version is the highest version of its events (an index-only lookup): updating a row
-- per append would make every append to a busy stream rewrite that row.
CREATE TABLE __SCHEMA__.streams (
    stream_id   text        PRIMARY KEY,
    stream_type text        NOT NULL,
    deleted     boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE __SCHEMA__.events (
    position       bigserial   PRIMARY KEY,
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id      text        NOT NULL,
    stream_type    text        NOT NULL,
    version        bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

-- Readers of the global log order by (transaction id, position) below the xmin fence.
CREATE INDEX events_log_order ON __SCHEMA__.events (transaction_id, position);

CREATE TABLE __SCHEMA__.outbox (
    position       bigserial   PRIMARY KEY,
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    message_id     uuid        NOT NULL,
    stream_id      text,
    message_type   text        NOT NULL,
    schema_version integer     NOT NULL,
    partition_key  text        NOT NULL,
    topic          text,
    source_type    text,
    source_id      text,
    correlation_id uuid,
    causation_id   uuid,
    occurred_at    timestamptz NOT NULL,
    headers        jsonb       NOT NULL,
    payload        jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX outbox_log_order ON __SCHEMA__.outbox (transaction_id, position);
-- Erasure removes the outbox rows a stream's appends wrote.
CREATE INDEX outbox_stream ON __SCHEMA__.outbox (stream_id) WHERE stream_id IS NOT NULL;

CREATE TABLE __SCHEMA__.snapshots (
    stream_id        text        PRIMARY KEY,
    version          bigint      NOT NULL,
    snapshot_version integer     NOT NULL,
    state            jsonb       NOT NULL,
    taken_at         timestamptz NOT NULL
);

CREATE TABLE __SCHEMA__.checkpoints (
    name           text        PRIMARY KEY,
    transaction_id bigint      NOT NULL,
    sequence       bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
