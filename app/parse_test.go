package app_test

import (
	"bytes"
	"context"
	"fmt"
	"mime/multipart"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
)

// denseXML is a submission of the household form padded with n small
// elements the form does not define: cheap to send, costly to parse (about
// 20 bytes of memory per byte), and refused once checked.
func denseXML(id string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<household id="household" version="2026110101"><head_name>A</head_name><meta><instanceID>uuid:%s</instanceID></meta>`, id)
	for i := range n {
		fmt.Fprintf(&b, `<z k="1">%d</z>`, i)
	}
	b.WriteString(`</household>`)
	return b.String()
}

// TestParseBudgetBoundsMemory sends twelve costly documents at once. Within
// the parse budget they are parsed a few at a time, so the heap holds a tree or
// two, not twelve.
func TestParseBudgetBoundsMemory(t *testing.T) {
	for _, tc := range []struct {
		name   string
		budget int64
	}{{"budget", 2 << 20}, {"no budget", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			svc, pid, p, blobs := setup(t)
			svc.Limits.ParseBudget = tc.budget
			const docs = 12
			bodies := make([][]byte, docs)
			for i := range bodies {
				bodies[i] = body([3]string{"xml_submission_file", "s.xml", denseXML(fmt.Sprint(i), 90_000)})
			}
			size := len(bodies[0])

			// Collect often, so the heap measures what is alive more than
			// what the collector has yet to reach.
			defer debug.SetGCPercent(debug.SetGCPercent(25))
			runtime.GC()
			sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
			metrics.Read(sample)
			base := sample[0].Value.Uint64()
			stop, peakc := make(chan struct{}), make(chan uint64)
			go func() {
				var peak uint64
				for {
					metrics.Read(sample)
					peak = max(peak, sample[0].Value.Uint64())
					select {
					case <-stop:
						peakc <- peak
						return
					case <-time.After(500 * time.Microsecond):
					}
				}
			}()
			var wg gosync.WaitGroup
			errs := make([]error, docs)
			for i := range bodies {
				wg.Go(func() {
					mr := multipart.NewReader(bytes.NewReader(bodies[i]), "BOUNDARY")
					_, errs[i] = svc.Submit(context.Background(), app.SubmitRequest{Principal: p, ProjectID: pid, Parts: mr})
				})
			}
			wg.Wait()
			close(stop)
			grew := int64(<-peakc) - int64(base)
			for i, err := range errs {
				if haven.ErrorCode(err) != haven.EINVALID || !strings.Contains(err.Error(), "z") {
					t.Fatalf("document %d: want a refusal naming the undefined element, got %v", i, err)
				}
			}
			if n := blobs.count(); n != 0 {
				t.Fatalf("%d objects stored from refused documents", n)
			}
			t.Logf("%d documents of %d KB: heap grew by %d MB at most", docs, size>>10, grew>>20)
			// One parsed document here takes about 30 MB; the bodies and
			// the XML read from them about 40 MB in all.
			bounded := grew < 150<<20
			if tc.budget > 0 && !bounded {
				t.Fatalf("within a %d MB parse budget the heap grew by %d MB", tc.budget>>20, grew>>20)
			}
			if tc.budget == 0 && bounded {
				// The check above must be able to fail: without a
				// budget, the twelve trees are alive at once.
				t.Fatalf("without a parse budget the heap grew by only %d MB; the test no longer measures the budget", grew>>20)
			}
		})
	}
}
