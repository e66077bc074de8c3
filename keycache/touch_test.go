package keycache

import (
	"context"
	"testing"
	"time"
)

func TestTouchBatches(t *testing.T) {
	c, _, m := setup(t)
	ctx := context.Background()
	k := create(t, m, "a1")
	e, _ := c.Verify(ctx, k.Secret)
	for range 1000 {
		c.Touch(e)
	}
	if len(c.touched) != 1 {
		t.Fatalf("%d pending touches for one key", len(c.touched))
	}
	if err := c.FlushTouched(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := m.Store.GetKey(ctx, "a1", k.ID)
	if err != nil || got.LastUsedAt == nil {
		t.Fatalf("last used not written: %v %+v", err, got)
	}
	// Within TouchPrecision, later uses are not written again...
	c.Touch(e)
	if len(c.touched) != 0 {
		t.Fatal("a use within TouchPrecision was queued")
	}
	// ...after it, the next use is.
	later := time.Now().Add(TouchPrecision + time.Second)
	c.now = func() time.Time { return later }
	if err := c.FlushTouched(ctx); err != nil {
		t.Fatal(err)
	}
	c.Touch(e)
	if len(c.touched) != 1 {
		t.Fatal("a use after TouchPrecision was not queued")
	}
}
