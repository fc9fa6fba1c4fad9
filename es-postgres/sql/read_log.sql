-- One batch of the global log below the fence: only rows whose writer's transaction id is
-- below the oldest transaction still running, so nothing can commit later behind them.
WITH fence AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin,
           pg_snapshot_xmax(pg_current_snapshot()) AS xmax
)
SELECT (f.xmin::text)::bigint AS fence,
       (f.xmax::text)::bigint AS next_xid,
       (SELECT (max(m.transaction_id)::text)::bigint FROM __SCHEMA__.events m) AS max_xid,
       EXISTS (SELECT 1 FROM __SCHEMA__.events h WHERE h.transaction_id >= f.xmin) AS held_back,
       e.position, e.transaction_id, e.stream_id, e.version, e.event_type, e.schema_version,
       e.data, e.metadata, e.recorded_at
FROM fence f
LEFT JOIN LATERAL (
    -- Ordered by the stored columns (qualified: the output's bigint transaction_id would
    -- not match the index and forces a sort of every remaining row).
    SELECT ev.position, (ev.transaction_id::text)::bigint AS transaction_id, ev.stream_id,
           ev.version, ev.event_type, ev.schema_version, ev.data, ev.metadata, ev.recorded_at
    FROM __SCHEMA__.events ev
    WHERE (ev.transaction_id, ev.position) > ($1::text::xid8, $2)
      AND ev.transaction_id < f.xmin
      AND ($3::text[] IS NULL OR ev.stream_type = ANY ($3))
      AND ($4::text[] IS NULL OR ev.event_type = ANY ($4))
    ORDER BY ev.transaction_id, ev.position
    LIMIT $5
) e ON true
ORDER BY e.transaction_id, e.position
