package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// usageTests are the conformance tests of usage metering and the limit
// counters (keystore.UsageStore).
var usageTests = []test{
	{"UsageAddAndQuery", testUsageAddAndQuery},
	{"UsageFullBatch", testUsageFullBatch},
	{"UsageRefused", testUsageRefused},
	{"UsagePrune", testUsagePrune},
	{"QuotaCounters", testQuotaCounters},
	{"RateCounters", testRateCounters},
	{"RateCountersConcurrent", testRateCountersConcurrent},
	{"PruneLimitCounters", testPruneLimitCounters},
}

func usageStore(t *testing.T, s keystore.Store) keystore.UsageStore {
	t.Helper()
	us, ok := s.(keystore.UsageStore)
	if !ok {
		t.Fatalf("%T does not implement keystore.UsageStore", s)
	}
	return us
}

var hour0 = time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC)

func testUsageAddAndQuery(t *testing.T, s keystore.Store) {
	us, ctx := usageStore(t, s), ctxFor(t)
	a, b := newAccount(), newAccount()
	h1 := hour0.Add(time.Hour)
	add := func(rows ...keystore.UsageCount) {
		t.Helper()
		if err := us.AddUsage(ctx, rows); err != nil {
			t.Fatalf("AddUsage: %v", err)
		}
	}
	add(keystore.UsageCount{KeyID: "key_a1", AccountID: a, Hour: hour0, Allowed: 3, Forbidden: 1},
		keystore.UsageCount{KeyID: "key_a1", AccountID: a, Hour: hour0.Add(17 * time.Minute), Limited: 2}, // same hour: merged
		keystore.UsageCount{KeyID: "key_a2", AccountID: a, Hour: h1, Allowed: 5},
		keystore.UsageCount{KeyID: "key_b1", AccountID: b, Hour: hour0, Allowed: 7})
	add(keystore.UsageCount{KeyID: "key_a1", AccountID: a, Hour: hour0, Allowed: 10}) // adds to the row
	add()

	got, err := us.Usage(ctx, keystore.UsageQuery{AccountID: a, From: hour0, To: hour0.Add(48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	want := []keystore.UsageCount{
		{KeyID: "key_a1", AccountID: a, Hour: hour0, Allowed: 13, Forbidden: 1, Limited: 2},
		{KeyID: "key_a2", AccountID: a, Hour: h1, Allowed: 5},
	}
	if !slices.EqualFunc(got, want, sameUsage) {
		t.Fatalf("account usage:\n got %+v\nwant %+v", got, want)
	}
	// One key; the range's end is exclusive.
	got, err = us.Usage(ctx, keystore.UsageQuery{KeyID: "key_a2", From: hour0, To: h1.Add(time.Hour)})
	if err != nil || len(got) != 1 || got[0].Allowed != 5 {
		t.Fatalf("key usage: %+v, %v", got, err)
	}
	got, err = us.Usage(ctx, keystore.UsageQuery{KeyID: "key_a2", From: hour0, To: h1})
	if err != nil || len(got) != 0 {
		t.Fatalf("usage up to the hour before: %+v, %v", got, err)
	}
	// A key of another account is not in this account's usage.
	got, err = us.Usage(ctx, keystore.UsageQuery{AccountID: a, KeyID: "key_b1", From: hour0, To: h1})
	if err != nil || len(got) != 0 {
		t.Fatalf("another account's key: %+v, %v", got, err)
	}
}

// testUsageFullBatch writes the largest batch AddUsage takes, twice, with
// rows of the same key and hour spread through it: backends that write
// rows in chunks must lose and double none at the chunks' edges.
func testUsageFullBatch(t *testing.T, s keystore.Store) {
	us, ctx := usageStore(t, s), ctxFor(t)
	acct := newAccount()
	const keys = 331 // rows per key: 3, so the batch's rows do not divide evenly
	var rows []keystore.UsageCount
	for i := range keystore.MaxUsageBatch - 7 {
		k := i % keys
		rows = append(rows, keystore.UsageCount{KeyID: fmt.Sprintf("key_%s_%03d", acct, k), AccountID: acct,
			Hour: hour0.Add(time.Duration(i%3) * time.Minute), Allowed: int64(i), Forbidden: 1})
	}
	allowed, forbidden := map[string]int64{}, map[string]int64{}
	for _, r := range rows {
		allowed[r.KeyID] += r.Allowed
		forbidden[r.KeyID] += r.Forbidden
	}
	for range 2 {
		if err := us.AddUsage(ctx, rows); err != nil {
			t.Fatalf("AddUsage of %d rows: %v", len(rows), err)
		}
	}
	got, err := us.Usage(ctx, keystore.UsageQuery{AccountID: acct, From: hour0, To: hour0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != keys {
		t.Fatalf("%d rows, want one per key (%d)", len(got), keys)
	}
	for _, g := range got {
		if g.Allowed != 2*allowed[g.KeyID] || g.Forbidden != 2*forbidden[g.KeyID] {
			t.Fatalf("%s: allowed %d, forbidden %d; want %d, %d", g.KeyID, g.Allowed, g.Forbidden, 2*allowed[g.KeyID], 2*forbidden[g.KeyID])
		}
	}
}

func sameUsage(x, y keystore.UsageCount) bool {
	return x.KeyID == y.KeyID && x.AccountID == y.AccountID && x.Hour.Equal(y.Hour) &&
		x.Allowed == y.Allowed && x.Forbidden == y.Forbidden && x.Limited == y.Limited
}

func testUsageRefused(t *testing.T, s keystore.Store) {
	us, ctx := usageStore(t, s), ctxFor(t)
	a := newAccount()
	bad := [][]keystore.UsageCount{
		{{KeyID: "key_ok", AccountID: a, Hour: hour0, Allowed: 1}, {KeyID: "", AccountID: a, Hour: hour0, Allowed: 1}},
		{{KeyID: "key_ok", AccountID: a, Hour: hour0, Allowed: 1}, {KeyID: "key_x", AccountID: a, Hour: hour0, Allowed: -1}},
		make([]keystore.UsageCount, keystore.MaxUsageBatch+1),
	}
	for i, rows := range bad {
		if err := us.AddUsage(ctx, rows); err == nil {
			t.Errorf("bad batch %d accepted", i)
		}
	}
	got, err := us.Usage(ctx, keystore.UsageQuery{AccountID: a, From: hour0, To: hour0.Add(time.Hour)})
	if err != nil || len(got) != 0 {
		t.Fatalf("a refused batch wrote %+v (%v)", got, err)
	}
	if _, err := us.Usage(ctx, keystore.UsageQuery{From: hour0, To: hour0.Add(time.Hour)}); err == nil {
		t.Error("usage of no account and no key accepted")
	}
	if _, err := us.AddQuota(ctx, []keystore.QuotaCount{{AccountID: a, Period: "week", Start: hour0, Add: 1}}); err == nil {
		t.Error("quota period week accepted")
	}
	if _, err := us.SyncRates(ctx, []keystore.RateCount{{Name: "a:x", Add: 1}, {Name: "a:x", Add: 1}}); err == nil {
		t.Error("a rate counter named twice accepted")
	}
}

func testUsagePrune(t *testing.T, s keystore.Store) {
	us, ctx := usageStore(t, s), ctxFor(t)
	a := newAccount()
	old := hour0.Add(-keystore.UsageRetention - time.Hour)
	if err := us.AddUsage(ctx, []keystore.UsageCount{
		{KeyID: "key_1", AccountID: a, Hour: old, Allowed: 1},
		{KeyID: "key_1", AccountID: a, Hour: hour0, Allowed: 2},
	}); err != nil {
		t.Fatal(err)
	}
	n, err := us.PruneUsage(ctx, hour0.Add(-keystore.UsageRetention))
	if err != nil || n < 1 {
		t.Fatalf("PruneUsage = %d, %v", n, err)
	}
	got, err := us.Usage(ctx, keystore.UsageQuery{KeyID: "key_1", From: old, To: hour0.Add(time.Hour)})
	if err != nil || len(got) != 1 || got[0].Allowed != 2 {
		t.Fatalf("after pruning: %+v, %v", got, err)
	}
}

func testQuotaCounters(t *testing.T, s keystore.Store) {
	us, ctx := usageStore(t, s), ctxFor(t)
	a, b := newAccount(), newAccount()
	day := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	month := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	got, err := us.AddQuota(ctx, []keystore.QuotaCount{
		{AccountID: a, Period: "day", Start: day, Add: 5},
		{AccountID: a, Period: "month", Start: month, Add: 7},
		{AccountID: b, Period: "day", Start: day}, // read only: absent reads 0
	})
	if err != nil || !slices.Equal(got, []int64{5, 7, 0}) {
		t.Fatalf("AddQuota = %v, %v", got, err)
	}
	got, err = us.AddQuota(ctx, []keystore.QuotaCount{
		{AccountID: a, Period: "day", Start: day},
		{AccountID: a, Period: "day", Start: day.AddDate(0, 0, 1), Add: 1},
		{AccountID: a, Period: "month", Start: month, Add: 3},
	})
	if err != nil || !slices.Equal(got, []int64{5, 1, 10}) {
		t.Fatalf("AddQuota again = %v, %v", got, err)
	}
	counts, err := us.QuotaCounts(ctx, "day", day)
	if err != nil || counts[a] != 5 {
		t.Fatalf("QuotaCounts = %v, %v", counts, err)
	}
	if _, ok := counts[b]; ok {
		t.Fatal("reading a counter created it")
	}
}

func testRateCounters(t *testing.T, s keystore.Store) {
	us, ctx := usageStore(t, s), ctxFor(t)
	n1, n2 := "a:"+newAccount(), "k:"+NewID()
	got, err := us.SyncRates(ctx, []keystore.RateCount{{Name: n1, Add: 4}, {Name: n2}})
	if err != nil || !slices.Equal(got, []int64{4, 0}) {
		t.Fatalf("SyncRates = %v, %v", got, err)
	}
	got, err = us.SyncRates(ctx, []keystore.RateCount{{Name: n2, Add: 2}, {Name: n1}, {Name: "a:" + newAccount(), Add: -1}})
	if err != nil || !slices.Equal(got, []int64{2, 4, -1}) {
		t.Fatalf("SyncRates again = %v, %v", got, err)
	}
}

// testRateCountersConcurrent checks what the limiter's cluster sync rests
// on: every addition returns the total right after it, so no two additions
// of 1 see the same total, and the totals cover every addition.
func testRateCountersConcurrent(t *testing.T, s keystore.Store) {
	us, ctx := usageStore(t, s), ctxFor(t)
	name := "a:" + newAccount()
	const workers, each = 4, 25
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				got, err := us.SyncRates(ctx, []keystore.RateCount{{Name: name, Add: 1}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[got[0]] {
					t.Errorf("total %d returned twice", got[0])
				}
				seen[got[0]] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	got, err := us.SyncRates(ctx, []keystore.RateCount{{Name: name}})
	if err != nil || got[0] != workers*each || len(seen) != workers*each {
		t.Fatalf("final total %v (%v), %d distinct totals; want %d", got, err, len(seen), workers*each)
	}
}

func testPruneLimitCounters(t *testing.T, s keystore.Store) {
	us, ctx := usageStore(t, s), ctxFor(t)
	a := newAccount()
	old := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cur := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	if _, err := us.AddQuota(ctx, []keystore.QuotaCount{
		{AccountID: a, Period: "month", Start: old, Add: 1},
		{AccountID: a, Period: "month", Start: cur, Add: 2},
	}); err != nil {
		t.Fatal(err)
	}
	name := "a:" + a
	if _, err := us.SyncRates(ctx, []keystore.RateCount{{Name: name, Add: 3}}); err != nil {
		t.Fatal(err)
	}
	// Rate counters changed before the cut-off go; none was (they were
	// just written), so this keeps the rate counter and drops January.
	if err := us.PruneLimitCounters(ctx, cur.AddDate(0, -1, 0)); err != nil {
		t.Fatal(err)
	}
	got, err := us.AddQuota(ctx, []keystore.QuotaCount{
		{AccountID: a, Period: "month", Start: old},
		{AccountID: a, Period: "month", Start: cur},
	})
	if err != nil || !slices.Equal(got, []int64{0, 2}) {
		t.Fatalf("quota counters after pruning: %v, %v", got, err)
	}
	if got, err := us.SyncRates(ctx, []keystore.RateCount{{Name: name}}); err != nil || got[0] != 3 {
		t.Fatalf("fresh rate counter after pruning: %v, %v", got, err)
	}
	if err := us.PruneLimitCounters(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, err := us.SyncRates(ctx, []keystore.RateCount{{Name: name}}); err != nil || got[0] != 0 {
		t.Fatalf("idle rate counter survived pruning: %v, %v", got, err)
	}
}
