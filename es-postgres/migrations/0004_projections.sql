-- Projections run by the daemon: the active version of each read model, a rebuild in
-- progress, pause state and progress. Checkpoints live in `checkpoints`, one per version,
-- named '<name>@v<version>'.
CREATE TABLE __SCHEMA__.projections (
    name            text        PRIMARY KEY,
    -- The version readers should use.
    active_version  integer     NOT NULL CHECK (active_version >= 1),
    -- The version being rebuilt while the active one serves, if any.
    rebuild_version integer     CHECK (rebuild_version > active_version),
    state           text        NOT NULL DEFAULT 'running'
                                CHECK (state IN ('running', 'paused', 'rebuilding')),
    paused_reason   text,
    error           text,
    -- The event a paused projection stopped at.
    paused_stream   text,
    paused_version  bigint,
    paused_position bigint,
    -- When the last applied event was recorded (lag in time).
    last_event_at   timestamptz,
    applied_events  bigint      NOT NULL DEFAULT 0,
    rebuild_done    bigint      NOT NULL DEFAULT 0,
    rebuild_total   bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Events a projection skipped by policy after repeated failures: never a silent skip.
CREATE TABLE __SCHEMA__.projection_dead_letters (
    id             bigserial   PRIMARY KEY,
    projection     text        NOT NULL,
    version        integer     NOT NULL,
    transaction_id bigint      NOT NULL,
    position       bigint      NOT NULL,
    stream_id      text        NOT NULL,
    stream_version bigint      NOT NULL,
    event_type     text        NOT NULL,
    error          text        NOT NULL,
    attempts       integer     NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projection_dead_letters_by_projection
    ON __SCHEMA__.projection_dead_letters (projection, id);
