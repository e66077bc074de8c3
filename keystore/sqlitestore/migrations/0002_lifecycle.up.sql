-- Key lifecycle: restrictions, rolls and the audit trail.

-- allowed_ips: a JSON array of CIDR prefixes ("10.0.0.0/8"), empty = any
-- address. rate_requests/rate_window_us: the key's own rate limit, both
-- NULL for none. replaced_by: the id of the key that replaced this one when
-- it was rolled (its expires_at is then the end of the grace period).
ALTER TABLE api_keys ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(allowed_ips));
ALTER TABLE api_keys ADD COLUMN rate_requests INTEGER CHECK (rate_requests > 0);
ALTER TABLE api_keys ADD COLUMN rate_window_us INTEGER CHECK (rate_window_us > 0);
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;

-- The audit trail: one row per change, written in the change's transaction.
-- Nothing secret: no key, no hash.
CREATE TABLE events (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	at         TEXT NOT NULL,
	account_id TEXT NOT NULL,
	action     TEXT NOT NULL,
	actor      TEXT NOT NULL,
	source     TEXT NOT NULL,
	ip         TEXT NOT NULL,
	user_agent TEXT NOT NULL,
	key_id     TEXT NOT NULL,
	key_prefix TEXT NOT NULL,
	key_name   TEXT NOT NULL,
	details    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
) STRICT;

-- An account's events, newest first, paged by id.
CREATE INDEX events_account ON events (account_id, id DESC);
-- Retention pruning.
CREATE INDEX events_at ON events (at);
