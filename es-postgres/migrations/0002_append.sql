-- The one-round-trip append. __SCHEMA__ is the quoted schema, __LOCK_NS__ the lock namespace.
--
-- Status codes: 0 appended, 1 conflict (version = actual), 2 already appended (positions =
-- the original ones), 3 stream deleted, 4 an event id is stored elsewhere (detail = its
-- stream), 5 the transaction holds an id but did not take this stream's lock first.
-- 6 the transaction is not READ COMMITTED (a stale snapshot would misread the version).
-- p_expected: -1 any, -2 no stream, -3 stream exists, n >= 1 exact.

-- The same key is computed inline in append_events (keep the two in step).
CREATE FUNCTION __SCHEMA__.stream_lock_key(p_stream_id text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashtextextended('__LOCK_NS__' || p_stream_id, 0) $$;

-- Takes the stream locks of a transaction, sorted, before anything assigns it an id.
CREATE FUNCTION __SCHEMA__.lock_streams(p_stream_ids text[]) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_key bigint;
BEGIN
    FOR v_key IN
        SELECT DISTINCT __SCHEMA__.stream_lock_key(s) AS k FROM unnest(p_stream_ids) AS s ORDER BY k
    LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;
END
$$;

CREATE FUNCTION __SCHEMA__.append_events(
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
    v_count     integer := coalesce(array_length(p_event_ids, 1), 0);
    v_current   bigint;
    v_deleted   boolean;
    v_positions bigint[];
    v_found     bigint;
    v_first     bigint;
    v_same      boolean;
    v_other     text;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        SELECT 6::smallint, NULL::bigint, NULL::bigint, NULL::bigint[], NULL::text
        INTO status, version, transaction_id, positions, detail;
        RETURN;
    END IF;
    IF pg_current_xact_id_if_assigned() IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
          AND l.classid = ((v_key >> 32) & 4294967295)::oid
          AND l.objid = (v_key & 4294967295)::oid
          AND l.objsubid = 1
    ) THEN
        SELECT 5::smallint, NULL::bigint, NULL::bigint, NULL::bigint[], NULL::text
        INTO status, version, transaction_id, positions, detail;
        RETURN;
    END IF;

    PERFORM pg_advisory_xact_lock(v_key);

    SELECT coalesce((SELECT max(e.version) FROM __SCHEMA__.events e WHERE e.stream_id = p_stream_id), 0),
           coalesce((SELECT s.deleted FROM __SCHEMA__.streams s WHERE s.stream_id = p_stream_id), false)
    INTO v_current, v_deleted;
    IF v_deleted THEN
        SELECT 3::smallint, v_current, NULL::bigint, NULL::bigint[], NULL::text
        INTO status, version, transaction_id, positions, detail;
        RETURN;
    END IF;

    IF p_expected = -1
       OR (p_expected = -2 AND v_current = 0)
       OR (p_expected = -3 AND v_current > 0)
       OR (p_expected > 0 AND p_expected = v_current) THEN
        IF v_count > 0 THEN
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

            IF coalesce(array_length(v_positions, 1), 0) = v_count THEN
                IF v_current = 0 THEN
                    INSERT INTO __SCHEMA__.streams (stream_id, stream_type)
                    VALUES (p_stream_id, p_stream_type)
                    ON CONFLICT (stream_id) DO NOTHING;
                END IF;
            ELSIF v_positions IS NOT NULL THEN
                -- Some ids were already stored: undo this call's rows, then classify below.
                DELETE FROM __SCHEMA__.events e WHERE e.position = ANY (v_positions);
                v_positions := NULL;
            END IF;
        ELSE
            v_positions := '{}';
        END IF;

        IF v_positions IS NOT NULL THEN
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
                SELECT 2::smallint, v_first + v_count - 1,
                    (SELECT (e.transaction_id::text)::bigint FROM __SCHEMA__.events e WHERE e.position = v_positions[1]),
                    v_positions, NULL::text
        INTO status, version, transaction_id, positions, detail;
                RETURN;
            END IF;
            SELECT 4::smallint, v_current, NULL::bigint, NULL::bigint[],
                coalesce(v_other, p_stream_id) || ' ' || coalesce(
                    (SELECT i.id::text FROM unnest(p_event_ids) AS i(id)
                     JOIN __SCHEMA__.events e ON e.event_id = i.id LIMIT 1), '')
        INTO status, version, transaction_id, positions, detail;
            RETURN;
        END IF;
    END IF;

    SELECT 1::smallint, v_current, NULL::bigint, NULL::bigint[], NULL::text
        INTO status, version, transaction_id, positions, detail;
END
$$;

-- Soft delete: a tombstone appended through append_events, then the stream is marked deleted.
-- Hard delete: the stream's events, snapshot, outbox rows and stream row are removed.
-- Same status codes as append_events.
CREATE FUNCTION __SCHEMA__.delete_stream(
    p_stream_id text,
    p_expected  bigint,
    p_hard      boolean,
    p_event_id  uuid,
    p_metadata  jsonb
) RETURNS TABLE (status smallint, version bigint, transaction_id bigint, positions bigint[], detail text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_type    text;
    v_current bigint;
    r         record;
BEGIN
    IF NOT p_hard THEN
        SELECT s.stream_type INTO v_type FROM __SCHEMA__.streams s WHERE s.stream_id = p_stream_id;
        FOR r IN
            SELECT * FROM __SCHEMA__.append_events(
                p_stream_id, coalesce(v_type, ''), p_expected, ARRAY[p_event_id],
                ARRAY['$StreamDeleted'], ARRAY[1], ARRAY['{}'::jsonb], ARRAY[p_metadata], NULL)
        LOOP
            IF r.status = 0 THEN
                UPDATE __SCHEMA__.streams s SET deleted = true, updated_at = now()
                WHERE s.stream_id = p_stream_id;
            END IF;
            RETURN QUERY SELECT r.status, r.version, r.transaction_id, r.positions, r.detail;
        END LOOP;
        RETURN;
    END IF;

    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN QUERY SELECT 6::smallint, NULL::bigint, NULL::bigint, NULL::bigint[], NULL::text;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(__SCHEMA__.stream_lock_key(p_stream_id));
    SELECT coalesce(max(e.version), 0) INTO v_current FROM __SCHEMA__.events e WHERE e.stream_id = p_stream_id;
    IF NOT (p_expected = -1
            OR (p_expected = -2 AND v_current = 0)
            OR (p_expected = -3 AND v_current > 0)
            OR (p_expected > 0 AND p_expected = v_current)) THEN
        RETURN QUERY SELECT 1::smallint, v_current, NULL::bigint, NULL::bigint[], NULL::text;
        RETURN;
    END IF;
    DELETE FROM __SCHEMA__.events e WHERE e.stream_id = p_stream_id;
    DELETE FROM __SCHEMA__.snapshots s WHERE s.stream_id = p_stream_id;
    DELETE FROM __SCHEMA__.outbox o WHERE o.stream_id = p_stream_id;
    DELETE FROM __SCHEMA__.streams s WHERE s.stream_id = p_stream_id;
    RETURN QUERY SELECT 0::smallint, 0::bigint, NULL::bigint, '{}'::bigint[], NULL::text;
END
$$;
