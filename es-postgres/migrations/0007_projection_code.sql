-- The code version that owns each version of a projection's read model: the projection's
-- declared version (`Projection::version`) in the code that created the active version or
-- requested the rebuild. A node applies only versions its own code owns, so in a fleet being
-- upgraded older code never writes a newer version's tables, nor newer code an older one's.
-- NULL (rows from before this migration) reads as the table version itself.
ALTER TABLE __SCHEMA__.projections
    ADD COLUMN active_code  integer,
    ADD COLUMN rebuild_code integer;
