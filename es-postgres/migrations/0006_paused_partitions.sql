-- Consumer partitions held paused at a failing message until an operator resumes them.
-- __SCHEMA__ is the quoted schema.
CREATE TABLE __SCHEMA__.paused_partitions (
    group_id   text        NOT NULL,
    topic      text        NOT NULL,
    partition  integer     NOT NULL CHECK (partition >= 0),
    "offset"   bigint      NOT NULL CHECK ("offset" >= 0),
    message_id uuid        NOT NULL,
    reason     text        NOT NULL,
    paused_at  timestamptz NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);
