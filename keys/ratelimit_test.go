package keys_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keys"
)

func TestCreateWithRateLimit(t *testing.T) {
	m, ctx := manager(t), context.Background()
	c, err := m.Create(ctx, testActor, "acct_1", keys.CreateRequest{Name: "ci", RateLimit: &keys.RateLimitSpec{Requests: 10, Window: "1s"}})
	if err != nil {
		t.Fatal(err)
	}
	if rl := c.RateLimit; rl == nil || rl.Requests != 10 || rl.Window != time.Second {
		t.Fatalf("created key's rate limit %+v", c.RateLimit)
	}
	k, err := m.Store.GetKey(ctx, "acct_1", c.ID)
	if err != nil || k.RateLimit == nil || *k.RateLimit != *c.RateLimit {
		t.Fatalf("stored rate limit %+v (%v)", k.RateLimit, err)
	}
	// Above what a key may have, or malformed: a field error, nothing stored.
	for _, bad := range []keys.RateLimitSpec{{Requests: 1_000_000, Window: "1s"}, {Requests: 0, Window: "1s"}, {Requests: 5, Window: "soon"}} {
		_, err := m.Create(ctx, testActor, "acct_2", keys.CreateRequest{Name: "bad", RateLimit: &bad})
		var fe *keys.FieldError
		if !errors.As(err, &fe) || fe.Field != "rate_limit" {
			t.Errorf("%+v: %v, want a rate_limit field error", bad, err)
		}
	}
	if ks, err := m.List(ctx, "acct_2"); err != nil || len(ks) != 0 {
		t.Fatalf("a refused create stored %d keys (%v)", len(ks), err)
	}
}
