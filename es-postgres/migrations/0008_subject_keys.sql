-- Crypto-shredding: each data subject's keys, wrapped by a master key from configuration,
-- and the subjects forgotten (who asked, when; no personal data). __SCHEMA__ is the quoted
-- schema.
CREATE TABLE __SCHEMA__.subject_keys (
    subject        text        NOT NULL,
    version        integer     NOT NULL CHECK (version > 0),
    master_version integer     NOT NULL,
    nonce          bytea       NOT NULL,
    sealed_key     bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version)
);

CREATE TABLE __SCHEMA__.forgotten_subjects (
    subject      text        PRIMARY KEY,
    forgotten_by text        NOT NULL,
    forgotten_at timestamptz NOT NULL DEFAULT now()
);
