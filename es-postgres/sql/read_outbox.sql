WITH fence AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin,
           pg_snapshot_xmax(pg_current_snapshot()) AS xmax
)
SELECT (f.xmin::text)::bigint AS fence,
       (f.xmax::text)::bigint AS next_xid,
       (SELECT (max(m.transaction_id)::text)::bigint FROM __SCHEMA__.outbox m) AS max_xid,
       o.position, o.transaction_id, o.message_id, o.message_type, o.schema_version,
       o.partition_key, o.topic, o.source_type, o.source_id, o.correlation_id, o.causation_id,
       o.occurred_at, o.headers, o.payload
FROM fence f
LEFT JOIN LATERAL (
    SELECT position, (transaction_id::text)::bigint AS transaction_id, message_id, message_type,
           schema_version, partition_key, topic, source_type, source_id, correlation_id,
           causation_id, occurred_at, headers, payload
    FROM __SCHEMA__.outbox ob
    WHERE (ob.transaction_id, ob.position) > ($1::text::xid8, $2)
      AND ob.transaction_id < f.xmin
    -- The table's columns, not the bigint output alias: the index (transaction_id, position)
    -- serves this order only on the xid8 column itself.
    ORDER BY ob.transaction_id, ob.position
    LIMIT $3
) o ON true
ORDER BY o.transaction_id, o.position
