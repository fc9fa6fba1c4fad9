-- The product catalog: a plain table (not event-sourced). Idempotent; run under an advisory
-- lock so that several processes starting at once do not race.
CREATE TABLE IF NOT EXISTS __SCHEMA__.products (
    product_id   uuid PRIMARY KEY,
    name         text NOT NULL,
    category     text NOT NULL,
    description  text NOT NULL,
    image_url    text NOT NULL,
    price_cents  bigint NOT NULL CHECK (price_cents >= 0),
    position     integer NOT NULL
);
