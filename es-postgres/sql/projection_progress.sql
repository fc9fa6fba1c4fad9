-- After a batch: how many events were applied, when the last was recorded, and a rebuild's
-- progress; switches a caught-up rebuild to active ($5 = the rebuilt version) atomically.
UPDATE __SCHEMA__.projections
SET applied_events  = applied_events + $2,
    last_event_at   = CASE WHEN $6 THEN coalesce($3, last_event_at) ELSE last_event_at END,
    rebuild_done    = rebuild_done + $4,
    active_version  = CASE WHEN $5::integer = rebuild_version THEN $5 ELSE active_version END,
    active_code     = CASE WHEN $5::integer = rebuild_version THEN rebuild_code ELSE active_code END,
    rebuild_code    = CASE WHEN $5::integer = rebuild_version THEN NULL ELSE rebuild_code END,
    state           = CASE WHEN $5::integer = rebuild_version AND state = 'rebuilding'
                           THEN 'running' ELSE state END,
    rebuild_version = CASE WHEN $5::integer = rebuild_version THEN NULL ELSE rebuild_version END,
    updated_at      = now()
WHERE name = $1
