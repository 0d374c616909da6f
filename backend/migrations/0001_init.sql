-- BitStratus v1 schema. Times are unix seconds (BIGINT); tokens are stored only as SHA-256
-- hashes; the server never holds a key, a name or plaintext. Kept to portable SQL so the same
-- file can move to PostgreSQL (BLOB becomes BYTEA there).
--
-- files.expires_at: while uploading it holds created_at + the requested lifetime; completing
-- re-bases it to completion time + that lifetime, so a slow upload does not eat its lifetime.

CREATE TABLE files (
    id               TEXT PRIMARY KEY NOT NULL,
    owner_token_hash BLOB NOT NULL,
    auth_token_hash  BLOB NOT NULL,
    metadata         BLOB NOT NULL,
    kdf              TEXT NULL,
    size             BIGINT NOT NULL,
    first_part_size  BIGINT NOT NULL,
    part_size        BIGINT NOT NULL,
    part_count       BIGINT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('uploading', 'complete', 'deleted')),
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    download_limit   BIGINT NULL,
    download_count   BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX files_state_created ON files (state, created_at);
CREATE INDEX files_expires ON files (expires_at);

CREATE TABLE parts (
    file_id    TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    n          BIGINT NOT NULL,
    size       BIGINT NOT NULL,
    sha256     BLOB NOT NULL,
    object_key TEXT NOT NULL,
    -- When the part was stored: an upload is abandoned once it has been idle for the TTL.
    created_at BIGINT NOT NULL,
    PRIMARY KEY (file_id, n)
);

CREATE TABLE tickets (
    token_hash BLOB PRIMARY KEY NOT NULL,
    file_id    TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);

CREATE INDEX tickets_file ON tickets (file_id);
CREATE INDEX tickets_expires ON tickets (expires_at);
