-- Every projection with its active version's checkpoint and how many events of the log lie
-- past it (lag in events).
SELECT p.name, p.active_version, p.rebuild_version, p.state, p.paused_reason, p.error,
       p.paused_stream, p.paused_version, p.last_event_at, p.applied_events, p.rebuild_done,
       p.rebuild_total, p.updated_at, c.transaction_id, c.sequence,
       (SELECT count(*) FROM __SCHEMA__.events e
        WHERE (e.transaction_id, e.position)
              > ((coalesce(c.transaction_id, 0))::text::xid8, coalesce(c.sequence, 0))) AS lag
FROM __SCHEMA__.projections p
LEFT JOIN __SCHEMA__.checkpoints c ON c.name = p.name || '@v' || p.active_version
WHERE $1::text IS NULL OR p.name = $1
ORDER BY p.name
