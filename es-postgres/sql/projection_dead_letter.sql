-- Records an event skipped by policy, in the transaction that moves the checkpoint past it.
INSERT INTO __SCHEMA__.projection_dead_letters
    (projection, version, transaction_id, position, stream_id, stream_version, event_type,
     error, attempts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
