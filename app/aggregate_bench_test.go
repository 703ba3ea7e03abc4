package app_test

import (
	"context"
	mrand "math/rand/v2"
	"strconv"
	"testing"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/clients/loadgen"
	"github.com/haven-org/haven/formspec"
)

// BenchmarkAggregate answers aggregate queries over HAVEN_EXPORT_N
// submissions (100,000 by default) of haven loadgen's 30-question form, and
// reports submissions/s and the growth of the process's RSS during the
// query. Queries: one dimension counted; three dimensions (two select_one
// questions and a date by month, 108 cells and their margins) with a mean.
// HAVEN_AGGREGATE_CPUPROFILE profiles the query alone; each query
// overwrites the file, so pick one with -bench BenchmarkAggregate/mean-by-3.
func BenchmarkAggregate(b *testing.B) {
	n := asServer(b)
	xform := loadgen.BenchForm("1")
	schema, err := formspec.Parse(xform)
	if err != nil {
		b.Fatal(err)
	}
	svc, pid := benchStore(b, n, "bench", xform, func(i int64, id string) string {
		return string(loadgen.Instance(schema, id, "", mrand.New(mrand.NewPCG(uint64(i), 1))))
	})
	ctx := context.Background()
	admin := &haven.Principal{Admin: true}
	for _, q := range []struct {
		name string
		opts app.AggregateOptions
	}{
		{"count-by-1", app.AggregateOptions{By: []string{"choice_01"}}},
		{"mean-by-3", app.AggregateOptions{By: []string{"choice_01", "choice_02", "arrival_date:month"}, Measure: "mean:income"}},
	} {
		b.Run(q.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				var agg *app.Aggregate
				elapsed, growth := measured(b, "HAVEN_AGGREGATE_CPUPROFILE", func() (err error) {
					agg, err = svc.Aggregate(ctx, admin, pid, "bench", q.opts)
					return err
				})
				if total := agg.Cells[0]; total.Count != strconv.Itoa(n) {
					b.Fatalf("the grand total is %s, not %d", total.Count, n)
				}
				b.ReportMetric(float64(n)/elapsed.Seconds(), "submissions/s")
				b.ReportMetric(float64(len(agg.Cells)), "cells")
				b.ReportMetric(float64(growth)/1024, "MB-rss-growth")
			}
		})
	}
}
