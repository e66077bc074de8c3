package main

import (
	"io"
	"log"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// result is one measured run of one Caddy: what it answered, how fast, and
// the CPU time it spent per request.
type result struct {
	requests       int64
	attackRequests int64
	errors         int64
	elapsed        time.Duration
	p50, p99       time.Duration
	cpuPerReq      time.Duration
	// cpu is the Caddy's CPU time over the measured window.
	cpu time.Duration
}

// window is a run's measured window, shared with traffic sent beside
// drive's own (the flood scenario's flood).
type window struct {
	measuring atomic.Bool
	from      atomic.Int64 // Unix nanoseconds
}

// counts reports whether a request due (or sent) at t and answered now
// counts: only requests due inside the window and answered before it
// closes. A request due in the warm-up that waited into the window would
// carry the warm-up's cold cache into p99.
func (w *window) counts(t time.Time) bool {
	return w.measuring.Load() && t.UnixNano() >= w.from.Load()
}

const clockTick = 10 * time.Millisecond // USER_HZ on Linux

// pace sends the due time of each request at rate per second until stop,
// then closes tickets. A request that finds no free connection waits in
// the channel, and its wait counts as latency.
func pace(tickets chan<- time.Time, rate int, stop *atomic.Bool) {
	defer close(tickets)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	sent := 0
	for !stop.Load() {
		due := int(time.Since(start) / interval)
		for ; sent <= due; sent++ {
			select {
			case tickets <- start.Add(time.Duration(sent) * interval):
			default:
				// Over 65,536 requests behind: the Caddy cannot keep up
				// with the rate, and that shows as latency already.
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// drive sends GET /v1/monitors/42 over conns connections for the warm-up
// and the measured duration. With secrets, requests carry them round
// robin; with attack, the remaining connections send a new random key with
// every request. Traffic sent beside it may share its measured window,
// win (nil: none).
func drive(cfg config, p *caddyProc, conns int, secrets []string, attack bool, profile string, win *window) result {
	tr := &http.Transport{MaxIdleConnsPerHost: cfg.conns, MaxConnsPerHost: cfg.conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := p.base + "/v1/monitors/42"

	if win == nil {
		win = new(window)
	}
	var stop atomic.Bool
	var next atomic.Uint64
	lat := make([][]time.Duration, conns)
	var attackCount, errCount atomic.Int64
	var wg sync.WaitGroup
	// Open loop: a pacer hands out the times at which requests are due,
	// and latency counts from then, so a slow answer that delays the next
	// requests shows in their latency too (no coordinated omission).
	var tickets chan time.Time
	if cfg.rate > 0 {
		tickets = make(chan time.Time, 1<<16)
		go pace(tickets, cfg.rate, &stop)
	}
	worker := func(keysList []string, record []time.Duration, out *[]time.Duration, isAttack bool) {
		defer wg.Done()
		req, _ := http.NewRequest("GET", url, nil)
		for n := 0; !stop.Load(); n++ {
			switch {
			case isAttack:
				req.Header.Set("Authorization", "Bearer "+attackKey(n%2 == 0))
			case len(keysList) > 0:
				req.Header.Set("Authorization", "Bearer "+keysList[next.Add(1)%uint64(len(keysList))])
			}
			t0 := time.Now()
			if tickets != nil && !isAttack {
				due, ok := <-tickets
				if !ok {
					break
				}
				t0 = due
			}
			resp, err := client.Do(req)
			d := time.Since(t0)
			if err != nil {
				errCount.Add(1)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// Only requests sent (or, open loop, due) inside the measured
			// window.
			if !win.counts(t0) {
				continue
			}
			if isAttack {
				attackCount.Add(1)
				continue
			}
			if resp.StatusCode != 200 || p.wantRateLimit && resp.Header.Get("RateLimit") == "" {
				errCount.Add(1)
			}
			record = append(record, d)
		}
		*out = record
	}
	for i := range conns {
		wg.Add(1)
		go worker(secrets, make([]time.Duration, 0, 1<<16), &lat[i], false)
	}
	if attack {
		for range cfg.conns - conns {
			wg.Add(1)
			var discard []time.Duration
			go worker(nil, nil, &discard, true)
		}
	}
	time.Sleep(cfg.warmup)
	cpu0 := p.cpuTicks()
	start := time.Now()
	win.from.Store(start.UnixNano())
	win.measuring.Store(true)
	profiled := make(chan error, 1)
	if profile != "" {
		go func() { profiled <- p.cpuProfile(profile, cfg.duration) }()
	}
	time.Sleep(cfg.duration)
	win.measuring.Store(false)
	elapsed := time.Since(start)
	cpu1 := p.cpuTicks()
	stop.Store(true)
	wg.Wait()
	if profile != "" {
		if err := <-profiled; err != nil {
			log.Printf("profile of %s: %v", p.name, err)
		}
	}

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := result{requests: int64(len(all)), attackRequests: attackCount.Load(), errors: errCount.Load(), elapsed: elapsed,
		cpu: time.Duration(cpu1-cpu0) * clockTick}
	if len(all) > 0 {
		r.p50 = all[len(all)/2]
		r.p99 = all[len(all)*99/100]
		total := r.requests + r.attackRequests
		r.cpuPerReq = r.cpu / time.Duration(total)
	}
	return r
}

func summarize(rs []result) (rps float64, p50, p99, cpu time.Duration, errs int64) {
	var reqs int64
	var secs float64
	var p50s, p99s, cpus []time.Duration
	for _, r := range rs {
		reqs += r.requests
		secs += r.elapsed.Seconds()
		p50s = append(p50s, r.p50)
		p99s = append(p99s, r.p99)
		cpus = append(cpus, r.cpuPerReq)
		errs += r.errors
	}
	return float64(reqs) / secs, median(p50s), median(p99s), median(cpus), errs
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
