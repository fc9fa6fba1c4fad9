-- Claims due deadlines for a lease: $1 is the caller's now, $2 the end of the lease, $3 the
-- most to claim. SKIP LOCKED lets concurrent schedulers claim disjoint deadlines; the due
-- rows are chosen and locked once (MATERIALIZED), then updated.
WITH due AS MATERIALIZED (
    SELECT p.id
    FROM __SCHEMA__.deadlines p
    WHERE p.due_at <= $1
      AND p.completed_at IS NULL AND p.cancelled_at IS NULL
      AND (p.claimed_until IS NULL OR p.claimed_until <= $1)
    ORDER BY p.due_at, p.id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE __SCHEMA__.deadlines d
SET claimed_until = $2
FROM due
WHERE d.id = due.id
RETURNING d.id, d.saga, d.key, d.step, d.due_at, d.payload
