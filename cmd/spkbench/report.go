package main

import (
	"fmt"
	"os"
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
	}
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/1e3) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/1e6) }
