SELECT position, transaction_id, stream_id, version, event_type, schema_version,
       data, metadata, recorded_at
FROM __SCHEMA__.events
WHERE stream_id = $1 AND version <= $2
ORDER BY version DESC
LIMIT $3
