-- One batch of the global log below the fence: only rows whose writer's transaction id is
-- below the oldest transaction still running, so nothing can commit later behind them.
--
-- The first row carries the fence (its position is null); the events follow, with nulls in
-- the fence columns, so those values are computed and sent once per batch, not once per row.
-- pg_current_snapshot() is the statement's snapshot: every call below sees the same fence.
SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint AS fence,
       (pg_snapshot_xmax(pg_current_snapshot())::text)::bigint AS next_xid,
       (SELECT (max(m.transaction_id)::text)::bigint FROM __SCHEMA__.events m) AS max_xid,
       EXISTS (
           SELECT 1 FROM __SCHEMA__.events h
           WHERE h.transaction_id >= pg_snapshot_xmin(pg_current_snapshot())
       ) AS held_back,
       NULL::bigint AS position, NULL::xid8 AS transaction_id, NULL::text AS stream_id,
       NULL::bigint AS version, NULL::text AS event_type, NULL::integer AS schema_version,
       NULL::jsonb AS data, NULL::jsonb AS metadata, NULL::timestamptz AS recorded_at
UNION ALL
(
    SELECT NULL, NULL, NULL, NULL,
           ev.position, ev.transaction_id, ev.stream_id, ev.version, ev.event_type,
           ev.schema_version, ev.data, ev.metadata, ev.recorded_at
    FROM __SCHEMA__.events ev
    WHERE (ev.transaction_id, ev.position) > ($1::text::xid8, $2)
      AND ev.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
      AND ($3::text[] IS NULL OR ev.stream_type = ANY ($3))
      AND ($4::text[] IS NULL OR ev.event_type = ANY ($4))
    -- The table's columns, not a bigint alias: the index (transaction_id, position) serves
    -- this order only on the xid8 column itself.
    ORDER BY ev.transaction_id, ev.position
    LIMIT $5
)
