-- The inbox, saga state and deadlines. __SCHEMA__ is the quoted schema.
--
-- Nothing here decides by the server's clock: every time that matters (when a saga state was
-- committed, when a deadline is due, claimed, completed or cancelled) comes from the caller.

-- Which messages each subscriber has handled; written in the handler's transaction.
CREATE TABLE __SCHEMA__.inbox (
    subscriber  text        NOT NULL,
    message_id  uuid        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscriber, message_id)
);

-- The latest state of each saga instance. Keys sort bytewise, as every backend lists them.
CREATE TABLE __SCHEMA__.saga_instances (
    saga       text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    version    bigint           NOT NULL,
    state      jsonb            NOT NULL,
    completed  boolean          NOT NULL,
    updated_at timestamptz      NOT NULL,
    PRIMARY KEY (saga, key)
);

-- Every committed version of each saga instance.
CREATE TABLE __SCHEMA__.saga_history (
    saga       text        NOT NULL,
    key        text        NOT NULL,
    version    bigint      NOT NULL,
    state      jsonb       NOT NULL,
    completed  boolean     NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (saga, key, version)
);

-- Deadlines: pending while neither completed nor cancelled. Setting a step's deadline again
-- replaces its pending row in place (new id, due time and payload; any claim released).
CREATE TABLE __SCHEMA__.deadlines (
    id            uuid        PRIMARY KEY,
    saga          text        NOT NULL,
    key           text        NOT NULL,
    step          text        NOT NULL,
    due_at        timestamptz NOT NULL,
    payload       jsonb       NOT NULL,
    claimed_until timestamptz,
    completed_at  timestamptz,
    cancelled_at  timestamptz
);

CREATE UNIQUE INDEX deadlines_pending_step ON __SCHEMA__.deadlines (saga, key, step)
    WHERE completed_at IS NULL AND cancelled_at IS NULL;

CREATE INDEX deadlines_pending_due ON __SCHEMA__.deadlines (due_at, id)
    WHERE completed_at IS NULL AND cancelled_at IS NULL;

-- Writes outbox messages (a JSON array of es-core OutboxMessage) in array order, with the
-- same columns as append_events; transaction_id defaults to the writer's transaction id.
CREATE FUNCTION __SCHEMA__.write_outbox(p_outbox jsonb) RETURNS void
LANGUAGE sql
AS $$
    INSERT INTO __SCHEMA__.outbox
        (message_id, message_type, schema_version, partition_key, topic, source_type,
         source_id, correlation_id, causation_id, occurred_at, headers, payload)
    SELECT (m->>'messageId')::uuid, m->>'messageType', (m->>'schemaVersion')::integer,
           m->>'partitionKey', m->>'topic', m->>'sourceType', m->>'sourceId',
           (m->>'correlationId')::uuid, (m->>'causationId')::uuid,
           (m->>'occurredAt')::timestamptz, coalesce(m->'headers', '{}'::jsonb),
           coalesce(m->'payload', 'null'::jsonb)
    FROM jsonb_array_elements(p_outbox) WITH ORDINALITY AS o(m, ord)
    ORDER BY o.ord
$$;

-- Sets deadlines, each replacing the pending one of its (saga, key, step); when a step is
-- given twice, the last one wins. An id already stored elsewhere (a deadline set again after
-- it completed) moves to its new place.
CREATE FUNCTION __SCHEMA__.set_deadlines(
    p_ids      uuid[],
    p_sagas    text[],
    p_keys     text[],
    p_steps    text[],
    p_due_at   timestamptz[],
    p_payloads jsonb[]
) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM __SCHEMA__.deadlines d
    USING unnest(p_ids, p_sagas, p_keys, p_steps) AS n(id, saga, key, step)
    WHERE d.id = n.id
      AND NOT (d.saga = n.saga AND d.key = n.key AND d.step = n.step
               AND d.completed_at IS NULL AND d.cancelled_at IS NULL);

    INSERT INTO __SCHEMA__.deadlines AS d (id, saga, key, step, due_at, payload)
    SELECT DISTINCT ON (n.saga, n.key, n.step) n.id, n.saga, n.key, n.step, n.due_at, n.payload
    FROM unnest(p_ids, p_sagas, p_keys, p_steps, p_due_at, p_payloads)
         WITH ORDINALITY AS n(id, saga, key, step, due_at, payload, ord)
    ORDER BY n.saga, n.key, n.step, n.ord DESC
    ON CONFLICT (saga, key, step) WHERE completed_at IS NULL AND cancelled_at IS NULL
    DO UPDATE SET id = EXCLUDED.id, due_at = EXCLUDED.due_at, payload = EXCLUDED.payload,
                  claimed_until = NULL;
END
$$;

-- One saga commit, as one statement (so one transaction, one round trip).
--
-- Status codes: 0 committed (saga_version = the new version), 1 duplicate (the inbox record
-- exists; nothing written), 2 conflict (saga_version = the stored version, 0 when none;
-- nothing written). No statement here can fail on a unique index.
--
-- It first locks the instance (a transaction-scoped advisory lock assigns no transaction id),
-- so the commits of one instance take their transaction ids in version order and their outbox
-- rows appear in that order in the outbox's (transaction id, position) order. Then the inbox
-- record, so a commit waits while another transaction holds the same record.
CREATE FUNCTION __SCHEMA__.saga_commit(
    p_saga              text,
    p_key               text,
    p_expected          bigint,
    p_state             jsonb,
    p_completed         boolean,
    p_now               timestamptz,
    p_subscriber        text,
    p_message_id        uuid,
    p_outbox            jsonb,
    p_cancel_steps      text[],
    p_deadline_ids      uuid[],
    p_deadline_sagas    text[],
    p_deadline_keys     text[],
    p_deadline_steps    text[],
    p_deadline_due_at   timestamptz[],
    p_deadline_payloads jsonb[]
) RETURNS TABLE (status smallint, saga_version bigint)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_version bigint := p_expected + 1;
    v_actual  bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(
        'es-postgres saga:__LOCK_NS__' || length(p_saga) || ':' || p_saga || ':' || p_key, 0));

    IF p_message_id IS NOT NULL THEN
        INSERT INTO __SCHEMA__.inbox (subscriber, message_id)
        VALUES (p_subscriber, p_message_id)
        ON CONFLICT (subscriber, message_id) DO NOTHING;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 1::smallint, NULL::bigint;
            RETURN;
        END IF;
    END IF;

    IF p_expected = 0 THEN
        INSERT INTO __SCHEMA__.saga_instances (saga, key, version, state, completed, updated_at)
        VALUES (p_saga, p_key, 1, p_state, p_completed, p_now)
        ON CONFLICT (saga, key) DO NOTHING;
    ELSE
        UPDATE __SCHEMA__.saga_instances s
        SET version = v_version, state = p_state, completed = p_completed, updated_at = p_now
        WHERE s.saga = p_saga AND s.key = p_key AND s.version = p_expected;
    END IF;
    IF NOT FOUND THEN
        -- A fresh snapshot (read committed): the version the winner committed.
        SELECT s.version INTO v_actual
        FROM __SCHEMA__.saga_instances s WHERE s.saga = p_saga AND s.key = p_key;
        IF p_message_id IS NOT NULL THEN
            DELETE FROM __SCHEMA__.inbox i
            WHERE i.subscriber = p_subscriber AND i.message_id = p_message_id;
        END IF;
        RETURN QUERY SELECT 2::smallint, coalesce(v_actual, 0);
        RETURN;
    END IF;

    INSERT INTO __SCHEMA__.saga_history (saga, key, version, state, completed, updated_at)
    VALUES (p_saga, p_key, v_version, p_state, p_completed, p_now);

    IF p_outbox IS NOT NULL THEN
        PERFORM __SCHEMA__.write_outbox(p_outbox);
    END IF;

    IF coalesce(cardinality(p_cancel_steps), 0) > 0 THEN
        UPDATE __SCHEMA__.deadlines d SET cancelled_at = p_now
        WHERE d.saga = p_saga AND d.key = p_key AND d.step = ANY (p_cancel_steps)
          AND d.completed_at IS NULL AND d.cancelled_at IS NULL;
    END IF;

    IF coalesce(cardinality(p_deadline_ids), 0) > 0 THEN
        PERFORM __SCHEMA__.set_deadlines(p_deadline_ids, p_deadline_sagas, p_deadline_keys,
            p_deadline_steps, p_deadline_due_at, p_deadline_payloads);
    END IF;

    RETURN QUERY SELECT 0::smallint, v_version;
END
$$;
