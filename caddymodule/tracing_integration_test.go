package caddymodule_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// spans receives the spans of Caddy's tracing handler in the tests: Caddy
// builds its exporter with autoexport, which OTEL_TRACES_EXPORTER points
// at this one.
var spans = tracetest.NewInMemoryExporter()

func init() {
	autoexport.RegisterSpanExporter("spk_test", func(context.Context) (sdktrace.SpanExporter, error) {
		return spans, nil
	})
}

// TestTracingSpanAttributes: with Caddy's tracing on, the span of a request
// whose key spk_auth verified carries the account id, key id and result
// (let through or refused for scope); a refused unknown key its result; no
// span carries the key.
func TestTracingSpanAttributes(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "spk_test")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10") // ms: export at once
	spans.Reset()
	g := startSite(t, "", "tracing {\n\t\tspan spk_gateway\n\t}\n\tspk_auth {\n\t\tpolicy statuspage\n\t}\n\treverse_proxy "+upstreamAddr)
	g.setPlan("acct_t", "pro")
	k := g.createKey("acct_t", "monitors:read")
	wantStatus(t, "ok", g.do("GET", "/v1/monitors", "X-API-Key", k.Secret), 200)
	wantStatus(t, "forbidden", g.do("DELETE", "/v1/monitors/1", "X-API-Key", k.Secret), 403)
	wantStatus(t, "unauthorized", g.do("GET", "/v1/monitors", "X-API-Key", mustGenerate(t).Secret), 401)

	var got []tracetest.SpanStub
	for deadline := time.Now().Add(10 * time.Second); len(got) < 3; time.Sleep(20 * time.Millisecond) {
		got = nil
		for _, s := range spans.GetSpans() {
			if s.Name == "spk_gateway" {
				got = append(got, s)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 request spans exported", len(got))
		}
	}
	want := []map[string]string{
		{"spk.result": "ok", "spk.account_id": "acct_t", "spk.key_id": k.ID},
		{"spk.result": "forbidden", "spk.account_id": "acct_t", "spk.key_id": k.ID},
		{"spk.result": "unauthorized"},
	}
	for i, s := range got[:3] {
		attrs := map[string]string{}
		for _, kv := range s.Attributes {
			v := kv.Value.Emit()
			if strings.Contains(v, k.Secret[4:]) {
				t.Fatalf("span attribute %s holds the key", kv.Key)
			}
			if strings.HasPrefix(string(kv.Key), "spk.") {
				attrs[string(kv.Key)] = v
			}
		}
		if len(attrs) != len(want[i]) {
			t.Errorf("span %d: spk attributes %v, want %v", i, attrs, want[i])
		}
		for key, v := range want[i] {
			if attrs[key] != v {
				t.Errorf("span %d: %s = %q, want %q", i, key, attrs[key], v)
			}
		}
	}
}
