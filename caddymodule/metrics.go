package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spkgate/spkgate/keycache"
)

// registerMetrics exposes the cache's counters on Caddy's metrics
// registry (the admin endpoint's /metrics). They carry no key, hash or
// account: only counts.
func registerMetrics(ctx caddy.Context, c *keycache.Cache) error {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return nil
	}
	if err := registerAuthMetrics(reg); err != nil {
		return err
	}
	counter := func(name, help string, read func(keycache.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "spk", Name: name, Help: help,
		}, func() float64 { return float64(read(c.Stats())) })
	}
	lookups := func(result string, read func(keycache.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "spk", Name: "store_lookups_total",
			Help:        "Key store queries made for cache misses, by result.",
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(read(c.Stats())) })
	}
	for _, col := range []prometheus.Collector{
		counter("keys_malformed_total", "Keys refused by their format or checksum, without a cache or store lookup.",
			func(s keycache.Stats) uint64 { return s.Malformed }),
		lookups("found", func(s keycache.Stats) uint64 { return s.Found }),
		lookups("not_found", func(s keycache.Stats) uint64 { return s.NotFound }),
		lookups("error", func(s keycache.Stats) uint64 { return s.Failed }),
		counter("store_reloads_total", "Key store queries that reloaded cached keys in use before their entries expired (up to 256 keys each).",
			func(s keycache.Stats) uint64 { return s.Reloads }),
		counter("keys_reloaded_total", "Cached keys reloaded before their entries expired.",
			func(s keycache.Stats) uint64 { return s.Reloaded }),
	} {
		if err := reg.Register(col); err != nil {
			return err
		}
	}
	return nil
}
