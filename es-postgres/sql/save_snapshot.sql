INSERT INTO __SCHEMA__.snapshots AS s (stream_id, version, snapshot_version, state, taken_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (stream_id) DO UPDATE
SET version = EXCLUDED.version, snapshot_version = EXCLUDED.snapshot_version,
    state = EXCLUDED.state, taken_at = EXCLUDED.taken_at
WHERE s.snapshot_version <> EXCLUDED.snapshot_version OR s.version <= EXCLUDED.version
