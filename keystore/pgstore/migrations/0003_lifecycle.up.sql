-- Key lifecycle: restrictions, rolls and the audit trail.

-- allowed_ips: CIDR prefixes as text ("10.0.0.0/8"), empty = any address.
-- rate_requests/rate_window_us: the key's own rate limit, both NULL for
-- none. replaced_by: the id of the key that replaced this one when it was
-- rolled (its expires_at is then the end of the grace period).
ALTER TABLE api_keys
	ADD COLUMN allowed_ips text[] NOT NULL DEFAULT '{}',
	ADD COLUMN rate_requests integer CHECK (rate_requests > 0),
	ADD COLUMN rate_window_us bigint CHECK (rate_window_us > 0),
	ADD COLUMN replaced_by text,
	ADD CONSTRAINT api_keys_rate_both CHECK ((rate_requests IS NULL) = (rate_window_us IS NULL));

-- The audit trail: one row per change, written in the change's transaction.
-- Nothing secret: no key, no hash.
CREATE TABLE events (
	id         bigserial PRIMARY KEY,
	at         timestamptz NOT NULL,
	account_id text NOT NULL,
	action     text NOT NULL,
	actor      text NOT NULL,
	source     text NOT NULL,
	ip         text NOT NULL,
	user_agent text NOT NULL,
	key_id     text NOT NULL,
	key_prefix text NOT NULL,
	key_name   text NOT NULL,
	details    jsonb NOT NULL DEFAULT '{}'
);

-- An account's events, newest first, paged by id.
CREATE INDEX events_account_idx ON events (account_id, id DESC);
-- Retention pruning.
CREATE INDEX events_at_idx ON events (at);
