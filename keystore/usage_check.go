package keystore

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// MergeUsage checks counts for AddUsage and sums the rows of the same key
// and hour, sorted by key and hour (the order in which backends lock rows,
// so that instances writing overlapping batches cannot deadlock).
func MergeUsage(counts []UsageCount) ([]UsageCount, error) {
	if len(counts) > MaxUsageBatch {
		return nil, fmt.Errorf("at most %d usage rows per call", MaxUsageBatch)
	}
	out := make([]UsageCount, 0, len(counts))
	for _, c := range counts {
		if c.KeyID == "" || c.AccountID == "" {
			return nil, fmt.Errorf("usage row without a key or account id")
		}
		if c.Allowed < 0 || c.Forbidden < 0 || c.Limited < 0 {
			return nil, fmt.Errorf("negative usage count")
		}
		c.Hour = c.Hour.UTC().Truncate(time.Hour)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b UsageCount) int {
		return cmp.Or(cmp.Compare(a.KeyID, b.KeyID), a.Hour.Compare(b.Hour))
	})
	merged := out[:0]
	for _, c := range out {
		if n := len(merged); n > 0 && merged[n-1].KeyID == c.KeyID && merged[n-1].Hour.Equal(c.Hour) {
			merged[n-1].Allowed += c.Allowed
			merged[n-1].Forbidden += c.Forbidden
			merged[n-1].Limited += c.Limited
			continue
		}
		merged = append(merged, c)
	}
	return merged, nil
}

// CheckQuotaCounts checks counts for AddQuota.
func CheckQuotaCounts(counts []QuotaCount) error {
	if len(counts) > MaxUsageBatch {
		return fmt.Errorf("at most %d quota counters per call", MaxUsageBatch)
	}
	for _, c := range counts {
		if c.AccountID == "" || (c.Period != "day" && c.Period != "month") || c.Add < 0 {
			return fmt.Errorf("quota counter needs an account, a period of day or month and a non-negative count")
		}
	}
	return nil
}

// CheckRateCounts checks counts for SyncRates: names unique and present.
func CheckRateCounts(counts []RateCount) error {
	if len(counts) > MaxUsageBatch {
		return fmt.Errorf("at most %d rate counters per call", MaxUsageBatch)
	}
	seen := make(map[string]bool, len(counts))
	for _, c := range counts {
		if c.Name == "" || seen[c.Name] {
			return fmt.Errorf("rate counter names must be present and unique")
		}
		seen[c.Name] = true
	}
	return nil
}
