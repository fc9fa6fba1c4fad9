-- A cheaper append_events: same signature, statuses and guarantees as 0002_append.sql.
-- __SCHEMA__ is the quoted schema, __LOCK_NS__ the lock namespace.
--
-- What changed (measurements in docs/benchmarks.md):
-- * The checks that run on every call are plain expressions (evaluated without starting the
--   executor); the pg_locks lookup runs only when the transaction already holds an id.
-- * The version and the deleted flag come from one index probe: the stream's last event. A
--   soft-deleted stream always ends with its tombstone (nothing can be appended after it), so
--   the streams row is read only when the last event is one.
-- * The first write of a transaction inserts with a plain INSERT inside a block that catches
--   unique_violation, instead of INSERT ... ON CONFLICT, whose speculative insertion costs a
--   second index probe and a WAL record per row. The block is a subtransaction; because it is
--   used only while the transaction has no id yet, a transaction opens at most one of them
--   here, however many appends it makes (more than 64 overflow the backend's subtransaction
--   cache, which slows every snapshot taken in the cluster while it runs). Later appends of
--   the same transaction keep ON CONFLICT DO NOTHING.
--   Either way a unique violation never reaches the caller: a clash (an id committed, or
--   committed meanwhile by a concurrent transaction) is classified below as before.
CREATE OR REPLACE FUNCTION __SCHEMA__.append_events(
    p_stream_id       text,
    p_stream_type     text,
    p_expected        bigint,
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_data            jsonb[],
    p_metadata        jsonb[],
    p_outbox          jsonb,
    OUT status        smallint,
    OUT version       bigint,
    OUT transaction_id bigint,
    OUT positions     bigint[],
    OUT detail        text
)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_key       bigint := hashtextextended('__LOCK_NS__' || p_stream_id, 0);
    v_count     integer := coalesce(cardinality(p_event_ids), 0);
    v_fresh     boolean := pg_current_xact_id_if_assigned() IS NULL;
    v_locked    boolean;
    v_current   bigint;
    v_tombstone boolean;
    v_positions bigint[];
    v_found     bigint;
    v_first     bigint;
    v_same      boolean;
    v_other     text;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        status := 6;
        RETURN;
    END IF;
    IF NOT v_fresh THEN
        IF NOT EXISTS (
            SELECT 1 FROM pg_locks l
            WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
              AND l.classid = ((v_key >> 32) & 4294967295)::oid
              AND l.objid = (v_key & 4294967295)::oid
              AND l.objsubid = 1
        ) THEN
            status := 5;
            RETURN;
        END IF;
    END IF;

    -- A statement of its own, so the next one reads with a snapshot taken after the lock.
    v_locked := pg_advisory_xact_lock(v_key) IS NULL;

    SELECT e.version, e.event_type = '$StreamDeleted'
    INTO v_current, v_tombstone
    FROM __SCHEMA__.events e
    WHERE e.stream_id = p_stream_id
    ORDER BY e.version DESC
    LIMIT 1;
    IF NOT FOUND THEN
        v_current := 0;
    ELSIF v_tombstone THEN
        -- Nested, so that the common case evaluates no query here.
        IF EXISTS (SELECT 1 FROM __SCHEMA__.streams s WHERE s.stream_id = p_stream_id AND s.deleted) THEN
            status := 3;
            version := v_current;
            RETURN;
        END IF;
    END IF;

    IF p_expected = -1
       OR (p_expected = -2 AND v_current = 0)
       OR (p_expected = -3 AND v_current > 0)
       OR (p_expected > 0 AND p_expected = v_current) THEN
        IF v_count = 0 THEN
            v_positions := '{}';
        ELSIF v_fresh THEN
            BEGIN
                WITH inserted AS (
                    INSERT INTO __SCHEMA__.events
                        (stream_id, stream_type, version, event_id, event_type, schema_version, data, metadata)
                    SELECT p_stream_id, p_stream_type, v_current + e.ord, e.id, e.type, e.schema_version, e.data, e.metadata
                    FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_data, p_metadata)
                         WITH ORDINALITY AS e(id, type, schema_version, data, metadata, ord)
                    ORDER BY e.ord
                    RETURNING __SCHEMA__.events.position AS p, __SCHEMA__.events.version AS v
                )
                SELECT array_agg(i.p ORDER BY i.v) INTO v_positions FROM inserted i;
            EXCEPTION WHEN unique_violation THEN
                -- Nothing of this call is left; classified below.
                v_positions := NULL;
            END;
        ELSE
            WITH inserted AS (
                INSERT INTO __SCHEMA__.events
                    (stream_id, stream_type, version, event_id, event_type, schema_version, data, metadata)
                SELECT p_stream_id, p_stream_type, v_current + e.ord, e.id, e.type, e.schema_version, e.data, e.metadata
                FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_data, p_metadata)
                     WITH ORDINALITY AS e(id, type, schema_version, data, metadata, ord)
                ORDER BY e.ord
                ON CONFLICT (event_id) DO NOTHING
                RETURNING __SCHEMA__.events.position AS p, __SCHEMA__.events.version AS v
            )
            SELECT array_agg(i.p ORDER BY i.v) INTO v_positions FROM inserted i;

            IF coalesce(cardinality(v_positions), 0) <> v_count THEN
                IF v_positions IS NOT NULL THEN
                    -- Some ids were already stored: undo this call's rows, then classify below.
                    DELETE FROM __SCHEMA__.events e WHERE e.position = ANY (v_positions);
                END IF;
                v_positions := NULL;
            END IF;
        END IF;

        IF v_positions IS NOT NULL THEN
            IF v_current = 0 AND v_count > 0 THEN
                INSERT INTO __SCHEMA__.streams (stream_id, stream_type)
                VALUES (p_stream_id, p_stream_type)
                ON CONFLICT (stream_id) DO NOTHING;
            END IF;
            IF p_outbox IS NOT NULL THEN
                INSERT INTO __SCHEMA__.outbox
                    (message_id, stream_id, message_type, schema_version, partition_key, topic,
                     source_type, source_id, correlation_id, causation_id, occurred_at, headers, payload)
                SELECT (m->>'messageId')::uuid, p_stream_id, m->>'messageType', (m->>'schemaVersion')::integer,
                       m->>'partitionKey', m->>'topic', m->>'sourceType', m->>'sourceId',
                       (m->>'correlationId')::uuid, (m->>'causationId')::uuid,
                       (m->>'occurredAt')::timestamptz, coalesce(m->'headers', '{}'::jsonb),
                       coalesce(m->'payload', 'null'::jsonb)
                FROM jsonb_array_elements(p_outbox) WITH ORDINALITY AS o(m, ord)
                ORDER BY o.ord;
            END IF;
            status := 0;
            version := v_current + v_count;
            transaction_id := (pg_current_xact_id_if_assigned()::text)::bigint;
            positions := v_positions;
            RETURN;
        END IF;
    END IF;

    -- The expected version did not match, or ids were already stored: an idempotent retry
    -- stores every id in this stream at consecutive versions, in order.
    IF v_count > 0 THEN
        SELECT count(e.position), min(e.version - i.ord + 1), bool_and(e.stream_id = p_stream_id),
               array_agg(e.position ORDER BY i.ord),
               (array_agg(e.stream_id) FILTER (WHERE e.stream_id <> p_stream_id))[1]
        INTO v_found, v_first, v_same, v_positions, v_other
        FROM unnest(p_event_ids) WITH ORDINALITY AS i(id, ord)
        LEFT JOIN __SCHEMA__.events e ON e.event_id = i.id;

        IF v_found > 0 THEN
            IF v_found = v_count AND v_same
               AND (SELECT count(DISTINCT e.version - i.ord) = 1
                    FROM unnest(p_event_ids) WITH ORDINALITY AS i(id, ord)
                    JOIN __SCHEMA__.events e ON e.event_id = i.id)
               AND (p_expected = -1
                    OR (p_expected = -2 AND v_first = 1)
                    OR (p_expected = -3 AND v_first > 1)
                    OR (p_expected > 0 AND p_expected = v_first - 1)) THEN
                status := 2;
                version := v_first + v_count - 1;
                transaction_id := (SELECT (e.transaction_id::text)::bigint
                                   FROM __SCHEMA__.events e WHERE e.position = v_positions[1]);
                positions := v_positions;
                RETURN;
            END IF;
            status := 4;
            version := v_current;
            detail := coalesce(v_other, p_stream_id) || ' ' || coalesce(
                (SELECT i.id::text FROM unnest(p_event_ids) AS i(id)
                 JOIN __SCHEMA__.events e ON e.event_id = i.id LIMIT 1), '');
            RETURN;
        END IF;
    END IF;

    status := 1;
    version := v_current;
END
$$;
