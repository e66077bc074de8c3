package caddymodule

import (
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// authResult is the outcome of spk_auth's check of one request: the
// result label of spk_auth_results_total and the spk.result attribute of
// the request's trace span. The set is fixed, so the metric's cardinality
// is too (it carries no account or key).
type authResult uint8

const (
	resultOK           authResult = iota // passed on to the next handler
	resultUnauthorized                   // 401: no key, or not a valid one
	resultForbidden                      // 403: scope, plan or address
	resultLimited                        // 429: failure limit, rate limit or quota
	resultUnavailable                    // 503: the store could not answer
	resultBadRequest                     // 400: key in the URL, ambiguous path
	numResults
)

var resultNames = [numResults]string{"ok", "unauthorized", "forbidden", "limited", "unavailable", "bad_request"}

// String returns the result's label value.
func (res authResult) String() string { return resultNames[res] }

// resultOf maps a refusal's status code to its result.
func resultOf(status int) authResult {
	switch status {
	case http.StatusUnauthorized:
		return resultUnauthorized
	case http.StatusForbidden:
		return resultForbidden
	case http.StatusTooManyRequests:
		return resultLimited
	case http.StatusServiceUnavailable:
		return resultUnavailable
	}
	return resultBadRequest
}

// Process-wide collectors, so that counts survive config reloads; each
// configuration registers them on its metrics registry (registerMetrics).
var (
	authResults = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "spk", Name: "auth_results_total",
		Help: "Requests checked by spk_auth, by result: ok, unauthorized, forbidden, limited, unavailable, bad_request.",
	}, []string{"result"})
	authResultCounters = func() (cs [numResults]prometheus.Counter) {
		for i := range cs {
			cs[i] = authResults.WithLabelValues(resultNames[i])
		}
		return cs
	}()
	authDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "spk", Name: "auth_check_duration_seconds",
		Help: "Time spk_auth takes to decide on a request (cache and store included, the upstream not).",
		// From a cached key (microseconds) to a store lookup at its
		// query timeout (3s).
		Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5},
	})
)

// registerAuthMetrics adds spk_auth's collectors to a configuration's
// registry.
func registerAuthMetrics(reg *prometheus.Registry) error {
	for _, c := range []prometheus.Collector{authResults, authDuration} {
		if err := reg.Register(c); err != nil {
			if _, dup := errors.AsType[prometheus.AlreadyRegisteredError](err); !dup {
				return err
			}
		}
	}
	return nil
}

// countResult counts one check's result and marks it on the request's
// trace span. Every answer spk_auth gives goes through it once: refuse
// does it for the refusals it writes, and a handler path that writes its
// own refusal (a 429 of the rate limit or quota) calls it with
// resultLimited.
func countResult(r *http.Request, res authResult) {
	authResultCounters[res].Inc()
	if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
		span.SetAttributes(attrResult.String(res.String()))
	}
}

// Attributes of the request's span (with Caddy's tracing): the identity
// of the key, never the key.
const (
	attrResult    = attribute.Key("spk.result")
	attrAccountID = attribute.Key("spk.account_id")
	attrKeyID     = attribute.Key("spk.key_id")
)

// identify puts the identity of a verified key on the request's span, for
// every answer that follows: ok, and the refusals of an authenticated
// request (scope, plan, address, limits).
func identify(r *http.Request, accountID, keyID string) {
	if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
		span.SetAttributes(attrAccountID.String(accountID), attrKeyID.String(keyID))
	}
}

// checkTimer measures the check's own duration: from ServeHTTP's start to
// the answer, or to the hand-over to the next handler (stop), whichever
// comes first.
type checkTimer struct {
	start   time.Time
	stopped bool
}

// stop observes the duration once.
func (t *checkTimer) stop() {
	if !t.stopped {
		t.stopped = true
		authDuration.Observe(time.Since(t.start).Seconds())
	}
}
