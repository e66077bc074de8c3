package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

func report(all []*series, attack bool) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "\tround\treq/s\tp50\tp99\tCPU/req\terrors\t")
	for i := range all[0].results {
		for _, s := range all {
			r := s.results[i]
			fmt.Fprintf(w, "%s\t%d\t%.0f\t%s\t%s\t%s\t%d\t\n", s.name, i+1, float64(r.requests)/r.elapsed.Seconds(),
				us(r.p50), us(r.p99), us(r.cpuPerReq), r.errors)
		}
	}
	type sum struct {
		rps           float64
		p50, p99, cpu time.Duration
	}
	sums := make([]sum, len(all))
	for k, s := range all {
		rps, p50, p99, cpu, errs := summarize(s.results)
		sums[k] = sum{rps, p50, p99, cpu}
		fmt.Fprintf(w, "%s\tall\t%.0f\t%s\t%s\t%s\t%d\t\n", s.name, rps, us(p50), us(p99), us(cpu), errs)
	}
	w.Flush()
	base := sums[0]
	for k, s := range all[1:] {
		c := sums[k+1]
		if attack {
			fmt.Printf("legitimate requests under attack (%s): p50 %+.0fµs, p99 %+.0fµs against %s (req/s counts only the legitimate half; CPU/req divides by all requests)\n",
				s.name, float64(c.p50-base.p50)/1e3, float64(c.p99-base.p99)/1e3, all[0].name)
			continue
		}
		fmt.Printf("%s against %s: throughput ratio %.3f (%+.1f%%), p50 %+.0fµs, p99 %+.0fµs, CPU per request %+.1fµs (%+.1f%%)\n",
			s.name, all[0].name, c.rps/base.rps, (c.rps/base.rps-1)*100, float64(c.p50-base.p50)/1e3, float64(c.p99-base.p99)/1e3,
			float64(c.cpu-base.cpu)/1e3, (float64(c.cpu)/float64(base.cpu)-1)*100)
		ratios, deltas := pairedRounds(all[0].results, s.results)
		fmt.Printf("  round by round (each run against the %s run beside it): throughput ratios %s, median %.3f; CPU per request %s, median %+.1fµs\n",
			all[0].name, joinf("%.3f", ratios), medianFloat(ratios), joinf("%+.1fµs", deltas), medianFloat(deltas))
	}
}

// pairedRounds compares each round's run with the base run of the same
// round: the throughput ratios and the CPU per request differences (µs).
// Runs next to each other in time share the machine's state, so on a
// machine whose speed drifts these are steadier than ratios of medians.
func pairedRounds(base, other []result) (ratios, deltas []float64) {
	for i := range min(len(base), len(other)) {
		b, o := base[i], other[i]
		if b.requests == 0 || o.requests == 0 {
			continue
		}
		brps, orps := float64(b.requests)/b.elapsed.Seconds(), float64(o.requests)/o.elapsed.Seconds()
		ratios = append(ratios, orps/brps)
		deltas = append(deltas, float64(o.cpuPerReq-b.cpuPerReq)/1e3)
	}
	return ratios, deltas
}

// medianFloat is the median of xs (the upper one of an even count).
func medianFloat(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// joinf formats each of xs with format and joins them with spaces.
func joinf(format string, xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, " ")
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/1e3) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/1e6) }

// floodSum is a run or a series of runs of the flood scenario: the other
// accounts' requests/s and latency (medians over runs), the CPU time per
// request (the flood's included) and the flood's answers.
type floodSum struct {
	rps                             float64
	p50, p99, cpu                   time.Duration
	sent, admitted, limited, errors int64
	secs                            float64
}

func sumFlood(runs []floodRun) floodSum {
	var s floodSum
	var others []result
	var cpus []time.Duration
	for _, r := range runs {
		others = append(others, r.others)
		cpus = append(cpus, r.cpuPerReq)
		s.sent, s.admitted, s.limited = s.sent+r.sent, s.admitted+r.admitted, s.limited+r.limited
		s.errors += r.errors + r.others.errors
		s.secs += r.others.elapsed.Seconds()
	}
	s.rps, s.p50, s.p99, _, _ = summarize(others)
	s.cpu = median(cpus)
	return s
}

// floodReport prints the flood scenario's runs, round by round and in
// all: the others' latency in both series, the p99 ratio flood/idle and
// what the flood got against its limit.
func floodReport(idle, flooded []floodRun, limit int) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "\tround\treq/s\tp50\tp99\tp99 ratio\tCPU/req\tflood sent\tadmitted\t429\tadmitted/s\terrors\t")
	row := func(round string, i, f floodSum) {
		fmt.Fprintf(w, "idle\t%s\t%.0f\t%s\t%s\t\t%s\t\t\t\t\t%d\t\n", round, i.rps, us(i.p50), us(i.p99), us(i.cpu), i.errors)
		fmt.Fprintf(w, "flood\t%s\t%.0f\t%s\t%s\t%.3f\t%s\t%d\t%d\t%d\t%.1f\t%d\t\n", round, f.rps, us(f.p50), us(f.p99),
			float64(f.p99)/float64(i.p99), us(f.cpu), f.sent, f.admitted, f.limited, float64(f.admitted)/f.secs, f.errors)
	}
	for r := range idle {
		row(fmt.Sprint(r+1), sumFlood(idle[r:r+1]), sumFlood(flooded[r:r+1]))
	}
	i, f := sumFlood(idle), sumFlood(flooded)
	row("all", i, f)
	w.Flush()
	fmt.Printf("others' requests under the flood against idle: p50 %s -> %s, p99 %s -> %s: p99 ratio %.3f (target <= 1.10)\n",
		us(i.p50), us(f.p50), us(i.p99), us(f.p99), float64(f.p99)/float64(i.p99))
	var ratios []float64
	for r := range min(len(idle), len(flooded)) {
		if ip := idle[r].others.p99; ip > 0 {
			ratios = append(ratios, float64(flooded[r].others.p99)/float64(ip))
		}
	}
	fmt.Printf("  round by round (each flood run against the idle run beside it): p99 ratios %s, median %.3f\n",
		joinf("%.3f", ratios), medianFloat(ratios))
	fmt.Printf("flood: %d requests (%.0f/s, 10x the limit), %d admitted (%.1f/s against a limit of %d/s), %d answered 429\n",
		f.sent, float64(f.sent)/f.secs, f.admitted, float64(f.admitted)/f.secs, limit, f.limited)
	fmt.Printf("CPU per request (the flood's requests included): idle %s, flood %s (%+.1f%%)\n",
		us(i.cpu), us(f.cpu), (float64(f.cpu)/float64(i.cpu)-1)*100)
}

// floodCheck fails the flood scenario's runs if their numbers do not hold
// what the scenario claims to measure: every other account's request
// answered 200, the flood limited to about its rate, and the store
// queried at most once per key (lookups, over the rounds).
func floodCheck(idle, flooded []floodRun, limit int, lookups float64, keys int) error {
	for _, r := range append(idle, flooded...) {
		if r.others.requests == 0 || r.others.errors > 0 {
			return fmt.Errorf("a run had %d requests of the other accounts answered 200 and %d errors (an answer without a RateLimit header is one): the numbers above are not comparable",
				r.others.requests, r.others.errors)
		}
	}
	var limited int64
	for _, r := range flooded {
		limited += r.limited
		// A bucket of limit tokens, refilled at limit/s: at most limit
		// plus limit per second; half as much again for timing slack.
		secs := r.others.elapsed.Seconds()
		switch allowed := float64(limit) * (1 + 1.5*secs); {
		case r.errors > 0:
			return fmt.Errorf("%d of the flood's answers were neither 200 nor 429 with a RateLimit header", r.errors)
		case float64(r.admitted) > allowed:
			return fmt.Errorf("the flood had %d requests admitted in %.1fs, more than a limit of %d/s allows", r.admitted, secs, limit)
		case r.admitted == 0 && float64(limit)*secs >= 3:
			return fmt.Errorf("the flood had none of its %d requests admitted in %.1fs, under a limit of %d/s", r.sent, secs, limit)
		}
	}
	if limited == 0 {
		return fmt.Errorf("the flood account, at 10 times its limit, was never limited")
	}
	if lookups > float64(keys) {
		return fmt.Errorf("%.0f store lookups during the rounds for %d keys: the store is reached per request", lookups, keys)
	}
	return nil
}
