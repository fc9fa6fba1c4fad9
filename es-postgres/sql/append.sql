SELECT status, version, transaction_id, positions, detail
FROM __SCHEMA__.append_events($1, $2, $3, $4, $5, $6, $7, $8, $9)
