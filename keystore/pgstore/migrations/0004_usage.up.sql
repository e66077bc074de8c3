-- Usage metering and limit counters (package limits).

-- Requests per key per UTC hour, kept 400 days.
CREATE TABLE key_usage (
	key_id     text NOT NULL,
	account_id text NOT NULL,
	hour       timestamptz NOT NULL,
	allowed    bigint NOT NULL DEFAULT 0,
	forbidden  bigint NOT NULL DEFAULT 0,
	limited    bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (key_id, hour)
);
CREATE INDEX key_usage_account_idx ON key_usage (account_id, hour);
CREATE INDEX key_usage_hour_idx ON key_usage (hour);

-- Forwarded requests per account per UTC day or month: quotas survive
-- restarts and are shared by every instance.
CREATE TABLE quota_counters (
	account_id   text NOT NULL,
	period       text NOT NULL CHECK (period IN ('day', 'month')),
	period_start timestamptz NOT NULL,
	used         bigint NOT NULL,
	updated_at   timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (account_id, period, period_start)
);
CREATE INDEX quota_counters_period_idx ON quota_counters (period, period_start);

-- What every instance admitted per limited account or key, summed: each
-- instance learns the others' admissions from the total. UNLOGGED: a
-- crash empties it, which the instances read as a new baseline, and the
-- writes every second skip the WAL.
CREATE UNLOGGED TABLE rate_counters (
	name       text PRIMARY KEY,
	total      bigint NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);
