-- Hashes are the 32-byte SHA-256 of a key; times are timestamptz, which
-- PostgreSQL keeps to the microsecond.

CREATE TABLE accounts (
	id         text PRIMARY KEY,
	plan       text NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
	id           text PRIMARY KEY,
	account_id   text NOT NULL,
	name         text NOT NULL,
	prefix       text NOT NULL,
	key_hash     bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
	scopes       text[] NOT NULL DEFAULT '{}',
	created_at   timestamptz NOT NULL,
	last_used_at timestamptz,
	expires_at   timestamptz,
	revoked_at   timestamptz
);

-- Listing an account's active keys, newest first.
CREATE INDEX api_keys_account_active_idx ON api_keys (account_id, created_at DESC, id DESC)
	WHERE revoked_at IS NULL;

-- The change log that caching instances follow. Rows are inserted under a
-- transaction-scoped advisory lock, so seq values become visible in order.
CREATE TABLE changes (
	seq        bigserial PRIMARY KEY,
	kind       text NOT NULL,
	account_id text NOT NULL,
	key_hash   bytea,
	at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX changes_at_idx ON changes (at);
