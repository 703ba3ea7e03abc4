package app_test

import (
	"bufio"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/clients/loadgen"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/storage"
)

// rssKB reads this process's resident set size.
func rssKB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

// BenchmarkExportCSV exports HAVEN_EXPORT_N submissions (100,000 by
// default) as a CSV zip to nowhere, and reports rows/s, CSV MB/s and the
// growth of the process's RSS during the export. Two forms: household
// (narrow rows, about 130 bytes: each submission a main row and a member
// row) and bench30 (haven loadgen's 30-question form: one row of about
// 1 KB per submission).
func BenchmarkExportCSV(b *testing.B) {
	n := asServer(b)
	b.Run("household", func(b *testing.B) {
		benchExport(b, n, "household", nil, 2, func(i int64, id string) string {
			return fmt.Sprintf(`<household id="household" version="2026110101"><start>2026-11-20T09:15:00.000+03:00</start>`+
				`<district>north</district><head_name>Head %d</head_name><members>3</members><visit_date>2026-11-20</visit_date>`+
				`<location>2.04 45.34 12 5</location><needs>food water</needs><shelter><roof>tarp</roof><photo/></shelter>`+
				`<member><age>34</age><sex>f</sex></member><price>10</price><meta><instanceID>%s</instanceID></meta></household>`, i, id)
		})
	})
	b.Run("bench30", func(b *testing.B) {
		xform := loadgen.BenchForm("1")
		schema, err := formspec.Parse(xform)
		if err != nil {
			b.Fatal(err)
		}
		benchExport(b, n, "bench", xform, 1, func(i int64, id string) string {
			return string(loadgen.Instance(schema, id, "", mrand.New(mrand.NewPCG(uint64(i), 1))))
		})
	})
}

// asServer sets the garbage collector as haven serve sets it (tuneGC in
// cmd/haven), unless GOGC or GOMEMLIMIT say otherwise, until b ends, and
// returns how many submissions to store: HAVEN_EXPORT_N, 100,000 by default.
func asServer(b *testing.B) int {
	if os.Getenv("GOGC") == "" {
		old := debug.SetGCPercent(400)
		b.Cleanup(func() { debug.SetGCPercent(old) })
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		old := debug.SetMemoryLimit(128 << 20)
		b.Cleanup(func() { debug.SetMemoryLimit(old) })
	}
	if v, err := strconv.Atoi(os.Getenv("HAVEN_EXPORT_N")); err == nil && v > 0 {
		return v
	}
	return 100_000
}

// benchStore stores n submissions of a form (publishing xform first when
// given; made by gen), then folds the write-ahead log into the database and
// collects the ingest's garbage, so that what follows is measured alone, as
// on a server some time after the submissions arrived.
func benchStore(b *testing.B, n int, formID string, xform []byte, gen func(i int64, id string) string) (*app.Service, int64) {
	svc, pid, _, o := setup(b)
	ctx := context.Background()
	if xform != nil {
		if _, err := svc.CreateForm(ctx, &haven.Principal{Admin: true}, pid, app.Upload{Body: xform}, true); err != nil {
			b.Fatal(err)
		}
	}
	form, err := o.st.Forms.Get(ctx, pid, formID)
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg gosync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				id := fmt.Sprintf("uuid:%d", i)
				if _, err := o.st.Submissions.Ingest(ctx, &storage.Incoming{ProjectID: pid, FormID: form.ID, FormVersionID: form.CurrentVersionID,
					InstanceID: id, XML: []byte(gen(i, id)), SubmitterID: 1}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := o.st.DB.Analyze(ctx); err != nil { // PostgreSQL: as autovacuum would after the bulk load
		b.Fatal(err)
	}
	if err := o.st.DB.Checkpoint(ctx); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	return svc, pid
}

// measured runs fn and returns how long it took and how far the process's
// RSS rose above where it started (sampled every 10 ms). When the variable
// profileEnv is set, fn alone is profiled into the file it names.
func measured(b *testing.B, profileEnv string, fn func() error) (time.Duration, int64) {
	base := rssKB()
	done, peakc := make(chan struct{}), make(chan int64)
	go func() {
		peak := int64(0)
		for {
			select {
			case <-done:
				peakc <- peak
				return
			case <-time.After(10 * time.Millisecond):
				if r := rssKB(); r > peak {
					peak = r
				}
			}
		}
	}()
	if path := os.Getenv(profileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
	}
	start := time.Now()
	err := fn()
	elapsed := time.Since(start)
	pprof.StopCPUProfile()
	close(done)
	peak := <-peakc
	if err != nil {
		b.Fatal(err)
	}
	return elapsed, max(peak-base, 0)
}

// benchExport stores n submissions of a form and times their export.
func benchExport(b *testing.B, n int, formID string, xform []byte, rowsPer int, gen func(i int64, id string) string) {
	svc, pid := benchStore(b, n, formID, xform, gen)
	ctx := context.Background()
	admin := &haven.Principal{Admin: true}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		exp, err := svc.Export(ctx, admin, pid, formID, app.ExportOptions{Format: "csv"})
		if err != nil {
			b.Fatal(err)
		}
		var out counter
		elapsed, growth := measured(b, "HAVEN_EXPORT_CPUPROFILE", func() error { return exp.Write(ctx, &out) })
		b.ReportMetric(float64(rowsPer*n)/elapsed.Seconds(), "rows/s")
		b.ReportMetric(float64(out.n)/1e6, "MB-zip")
		b.ReportMetric(float64(growth)/1024, "MB-rss-growth")
	}
}

// counter counts what is written to it.
type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
