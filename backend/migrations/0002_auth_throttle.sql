-- Per-file throttling of auth-token checks (metadata and downloads), so a link holder cannot
-- use the server to test password guesses at full speed.
--
-- auth_failures:     wrong auth tokens since the last right one.
-- auth_locked_until: unix seconds; until then both routes answer 429 without checking a token.
--                    The first 5 consecutive failures are free; failure k > 5 locks the file for
--                    min(2^(k-5), 3600) seconds. A right token resets both to 0.

ALTER TABLE files ADD COLUMN auth_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN auth_locked_until BIGINT NOT NULL DEFAULT 0;
