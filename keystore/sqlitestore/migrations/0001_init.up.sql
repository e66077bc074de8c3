-- Times are TEXT in UTC with exactly six fractional digits
-- ("2006-01-02T15:04:05.000000Z"), so they sort and compare as text and
-- round-trip to the microsecond. Hashes are the 32-byte SHA-256 of a key.

CREATE TABLE accounts (
	id         TEXT PRIMARY KEY,
	plan       TEXT NOT NULL,
	updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE api_keys (
	id           TEXT PRIMARY KEY,
	account_id   TEXT NOT NULL,
	name         TEXT NOT NULL,
	prefix       TEXT NOT NULL,
	key_hash     BLOB NOT NULL UNIQUE CHECK (length(key_hash) = 32),
	scopes       TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(scopes)),
	created_at   TEXT NOT NULL,
	last_used_at TEXT,
	expires_at   TEXT,
	revoked_at   TEXT
) STRICT;

-- Listing an account's active keys, newest first.
CREATE INDEX api_keys_account_active ON api_keys (account_id, created_at DESC, id DESC)
	WHERE revoked_at IS NULL;

-- The change log that caching instances follow. AUTOINCREMENT: a seq is
-- never reused, even after pruning.
CREATE TABLE changes (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	kind       TEXT NOT NULL,
	account_id TEXT NOT NULL,
	key_hash   BLOB,
	at         TEXT NOT NULL
) STRICT;

CREATE INDEX changes_at ON changes (at);
