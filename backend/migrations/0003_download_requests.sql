-- Idempotent download starts. A client may name its `POST /files/{id}/downloads` with an
-- `Idempotency-Key` header; a repeat of the same key for the same file (a retry after an
-- answer lost on the way) gets a fresh ticket without counting another download.
--
-- key_hash:   SHA-256 of the key; the key itself is not stored.
-- expires_at: unix seconds, the first ticket's expiry. Repeats get tickets that expire then
--             too; after it, the key counts as new.
CREATE TABLE download_requests (
    file_id    TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    key_hash   BLOB NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (file_id, key_hash)
);

CREATE INDEX download_requests_expires ON download_requests (expires_at);
