-- Only for a live stream that has reached the snapshot's version: a snapshot saved just after
-- a hard delete must not bring the erased state back.
INSERT INTO __SCHEMA__.snapshots AS s (stream_id, version, snapshot_version, state, taken_at)
SELECT $1, $2, $3, $4, $5
WHERE EXISTS (
    SELECT 1 FROM __SCHEMA__.streams t WHERE t.stream_id = $1 AND NOT t.deleted
) AND EXISTS (
    SELECT 1 FROM __SCHEMA__.events e WHERE e.stream_id = $1 AND e.version = $2
)
ON CONFLICT (stream_id) DO UPDATE
SET version = EXCLUDED.version, snapshot_version = EXCLUDED.snapshot_version,
    state = EXCLUDED.state, taken_at = EXCLUDED.taken_at
WHERE s.snapshot_version <> EXCLUDED.snapshot_version OR s.version <= EXCLUDED.version
