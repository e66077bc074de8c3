package keystore

import (
	"context"
	"time"
)

// UsageCount is one key's requests in one UTC hour: forwarded (Allowed),
// refused for scope (Forbidden) and refused for a rate limit or quota
// (Limited). As an argument of AddUsage the counts are added to the row.
type UsageCount struct {
	KeyID     string    `json:"key_id"`
	AccountID string    `json:"-"`
	Hour      time.Time `json:"period_start"`
	Allowed   int64     `json:"allowed"`
	Forbidden int64     `json:"forbidden"`
	Limited   int64     `json:"limited"`
}

// UsageQuery selects hourly usage rows: those of one key (KeyID) or of all
// of one account's keys (AccountID; with both, the key must be the
// account's), with From <= Hour < To.
type UsageQuery struct {
	AccountID string
	KeyID     string
	From, To  time.Time
}

// QuotaCount is an account's quota counter for the period of the given kind
// ("day" or "month") that starts at Start (UTC).
type QuotaCount struct {
	AccountID string
	Period    string
	Start     time.Time
	// Add is what to add to the counter; 0 only reads it.
	Add int64
}

// RateCount names a shared rate counter (one per limited account or key)
// and what this instance adds to it; 0 only reads it.
type RateCount struct {
	Name string
	Add  int64
}

// MaxUsageBatch bounds the rows of one AddUsage, AddQuota or SyncRates call.
const MaxUsageBatch = 1000

// UsageRetention is how long hourly usage is kept.
const UsageRetention = 400 * 24 * time.Hour

// UsageStore is implemented by the stores that keep usage and limit
// counters (both backends). Every method is one transaction: a batch is
// added entirely or not at all.
type UsageStore interface {
	// AddUsage adds the counts to the hourly rows (creating them).
	AddUsage(ctx context.Context, counts []UsageCount) error
	// Usage returns the rows q selects, oldest hour first, then by key id.
	Usage(ctx context.Context, q UsageQuery) ([]UsageCount, error)
	// PruneUsage deletes the rows of hours before the given time and
	// returns how many it deleted.
	PruneUsage(ctx context.Context, before time.Time) (int64, error)
	// AddQuota adds each count's Add to its counter (creating it) and
	// returns the counters' values after the additions, in order. A
	// counter that does not exist reads 0.
	AddQuota(ctx context.Context, counts []QuotaCount) ([]int64, error)
	// QuotaCounts returns every account's counter for the period of the
	// kind given that starts at start (accounts without one are absent).
	QuotaCounts(ctx context.Context, period string, start time.Time) (map[string]int64, error)
	// SyncRates adds each count's Add to its shared counter (creating it)
	// and returns the counters' totals after the additions, in order. Each
	// total is read in the same statement as the addition, so that the
	// difference between two totals is exactly what was added in between.
	SyncRates(ctx context.Context, counts []RateCount) ([]int64, error)
	// PruneLimitCounters deletes rate counters not changed since before,
	// and quota counters of periods that started before it.
	PruneLimitCounters(ctx context.Context, before time.Time) error
}
