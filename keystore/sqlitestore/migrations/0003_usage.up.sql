-- Usage metering and limit counters (package limits). Times as in 0001.

-- Requests per key per UTC hour, kept 400 days.
CREATE TABLE key_usage (
	key_id     TEXT NOT NULL,
	account_id TEXT NOT NULL,
	hour       TEXT NOT NULL,
	allowed    INTEGER NOT NULL DEFAULT 0,
	forbidden  INTEGER NOT NULL DEFAULT 0,
	limited    INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (key_id, hour)
) STRICT, WITHOUT ROWID;
CREATE INDEX key_usage_account ON key_usage (account_id, hour);
CREATE INDEX key_usage_hour ON key_usage (hour);

-- Forwarded requests per account per UTC day or month.
CREATE TABLE quota_counters (
	account_id   TEXT NOT NULL,
	period       TEXT NOT NULL CHECK (period IN ('day', 'month')),
	period_start TEXT NOT NULL,
	used         INTEGER NOT NULL,
	updated_at   TEXT NOT NULL,
	PRIMARY KEY (account_id, period, period_start)
) STRICT, WITHOUT ROWID;
CREATE INDEX quota_counters_period ON quota_counters (period, period_start);

-- What every process admitted per limited account or key, summed.
CREATE TABLE rate_counters (
	name       TEXT PRIMARY KEY,
	total      INTEGER NOT NULL,
	updated_at TEXT NOT NULL
) STRICT, WITHOUT ROWID;
