package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/clients/loadgen"
	"github.com/haven-org/haven/clients/rest"
)

const soakUsage = `haven soak: a long mixed load against a fresh Haven, recording what must stay flat.

  haven soak [--duration 30m] [--interval 15s] [--devices 16] [--out soak.csv] [--plot soak.svg]

It starts a Haven on a temporary data directory and, for --duration, runs at once:
devices submitting without pause (a quarter of them with a 30 KB photo), form
lists, a CSV export of the last minute's submissions every 30 s, an aggregate
every 20 s, API reads every 5 s, and one data subject's erasure a minute. Every --interval it records throughput and
p99 of that window, and the server's WAL and database size, RSS, open files,
goroutines and heap: a CSV, and an SVG plot of it.
`

// soakSubjectForm is a small form whose submissions are about a person,
// so a subject's erasure has something to erase every minute.
const soakSubjectForm = `<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa" xmlns:haven="urn:haven:xforms">
<h:head><h:title>Soak people</h:title><model haven:legal-basis="public_interest"><instance><people id="people" version="1"><person_id/><note/><district/><meta><instanceID/></meta></people></instance>
<bind nodeset="/people/person_id" type="string" haven:subject="true" haven:purpose="Find the person again" haven:sensitivity="level_2"/>
<bind nodeset="/people/note" type="string" haven:purpose="Soak answer" haven:sensitivity="level_1"/>
<bind nodeset="/people/district" type="string" haven:purpose="Plan by district" haven:sensitivity="public"/>
<bind nodeset="/people/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/></model></h:head>
<h:body><input ref="/people/person_id"><label>Person</label></input><input ref="/people/note"><label>Note</label></input>
<select1 ref="/people/district"><label>District</label><item><label>North</label><value>north</value></item><item><label>South</label><value>south</value></item></select1></h:body></h:html>`

// soakSample is one interval's record.
type soakSample struct {
	At                       time.Duration
	PerSecond, P99MS         float64
	WALMB, DBMB, RSSMB       float64
	WALLargestMB             float64
	OpenFiles, Goroutines    int
	HeapMB                   float64
	WALRestarts, Errors      int
	Exports, Erasures, Reads int64
}

func soakCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, _ := flags("soak", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, soakUsage) }
	duration := fs.Duration("duration", 30*time.Minute, "how long to run")
	interval := fs.Duration("interval", 15*time.Second, "how often to record")
	devices := fs.Int("devices", 16, "devices submitting without pause")
	out := fs.String("out", "soak.csv", "where to write the record")
	plot := fs.String("plot", "soak.svg", "where to draw it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sp, err := spawnHaven(ctx, stderr)
	if err != nil {
		return err
	}
	defer sp.Stop()
	base := sp.Base
	api, err := rest.Login(ctx, base, "loadgen@haven.local", sp.Password)
	if err != nil {
		return err
	}
	device, err := setupLoad(ctx, base, "loadgen@haven.local", sp.Password)
	if err != nil {
		return err
	}
	pid := device[strings.LastIndex(device, "/")+1:]
	if _, err := api.CreateForm(ctx, mustInt(pid), []byte(soakSubjectForm), true); err != nil {
		return err
	}
	var aus []struct{ ID int64 }
	if err := api.Do(ctx, "GET", "/v1/projects/"+pid+"/app-users", "", nil, &aus); err != nil {
		return err
	}
	if len(aus) == 0 {
		return fmt.Errorf("the load's app user is missing")
	}
	if err := api.AssignForm(ctx, mustInt(pid), "people", aus[0].ID); err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	var exports, erasures, reads, errs, person atomic.Int64
	var wg sync.WaitGroup
	every := func(d time.Duration, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(d)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if err := fn(); err != nil && ctx.Err() == nil {
						errs.Add(1)
						fmt.Fprintf(stderr, "soak: %v\n", err)
					}
				}
			}
		}()
	}
	form := "/v1/projects/" + pid + "/forms/bench"
	// The work stays the same size all along, so that what it costs can
	// stay flat: the last minute's submissions exported, the people form
	// (a submission a second) aggregated.
	every(30*time.Second, func() error {
		exports.Add(1)
		since := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
		_, err := api.Stream(ctx, form+"/export?format=csv&since="+since, io.Discard)
		return err
	})
	every(20*time.Second, func() error {
		if person.Load() < 20 {
			return nil // not enough yet for small-cell suppression to allow it
		}
		return api.Do(ctx, "GET", "/v1/projects/"+pid+"/forms/people/aggregate?by=district", "", nil, &map[string]any{})
	})
	every(5*time.Second, func() error {
		reads.Add(1)
		var subs []map[string]any
		if err := api.Do(ctx, "GET", form+"/submissions?limit=50", "", nil, &subs); err != nil {
			return err
		}
		if len(subs) > 0 {
			id, _ := subs[len(subs)-1]["instanceId"].(string)
			return api.Do(ctx, "GET", form+"/submissions/"+id, "", nil, &map[string]any{})
		}
		return nil
	})
	// People are submitted all along; one of them is erased each minute.
	people := collect.New(device)
	every(time.Second, func() error {
		n := person.Add(1)
		doc := fmt.Sprintf(`<people id="people" version="1"><person_id>P-%d</person_id><note>soak</note><district>%s</district><meta><instanceID>uuid:soak-person-%d</instanceID></meta></people>`, n, []string{"north", "south"}[n%2], n)
		_, err := people.Submit(ctx, []byte(doc), nil)
		return err
	})
	every(time.Minute, func() error {
		n := person.Load() / 2
		erasures.Add(1)
		err := api.Do(ctx, "DELETE", fmt.Sprintf("/v1/projects/%s/subjects/P-%d", pid, n), "", nil, nil)
		if e, ok := err.(*rest.Error); ok && e.Status == 404 {
			return nil // already erased, or not there yet
		}
		return err
	})
	// Form lists all along.
	wg.Add(1)
	go func() {
		defer wg.Done()
		loadgen.Run(ctx, loadgen.Config{ServerURL: device, Mode: loadgen.ModeFormList, Devices: 2, Duration: *duration, Think: time.Second})
	}()

	var samples []soakSample
	start := time.Now()
	for ctx.Err() == nil {
		window := min(*interval, time.Until(start.Add(*duration)))
		if window < time.Second {
			break
		}
		// Submissions in windows: a quarter of the devices with photos.
		var plain, photo *loadgen.Report
		var lw sync.WaitGroup
		lw.Add(2)
		go func() {
			defer lw.Done()
			plain, _ = loadgen.Run(ctx, loadgen.Config{ServerURL: device, FormID: "bench", Devices: max(1, *devices*3/4), Duration: window})
		}()
		go func() {
			defer lw.Done()
			photo, _ = loadgen.Run(ctx, loadgen.Config{ServerURL: device, FormID: "bench", Devices: max(1, *devices/4), Duration: window, Photo: 30_000})
		}()
		lw.Wait()
		s := soakSample{At: time.Since(start), Exports: exports.Load(), Erasures: erasures.Load(), Reads: reads.Load(), Errors: int(errs.Load())}
		for _, r := range []*loadgen.Report{plain, photo} {
			if r != nil {
				s.PerSecond += r.PerSecond
				s.P99MS = math.Max(s.P99MS, r.LatencyMS.P99)
				s.Errors += len(r.Errors)
			}
		}
		var st app.SystemStats
		if err := api.Do(context.Background(), "GET", "/v1/system/stats", "", nil, &st); err == nil {
			s.WALMB, s.DBMB, s.Goroutines, s.HeapMB = mb(st.WALBytes), mb(st.DatabaseBytes), st.Goroutines, mb(int64(st.HeapBytes))
			s.WALRestarts, s.WALLargestMB = st.WAL.Restarts, mb(st.WAL.Largest)
		}
		s.RSSMB, s.OpenFiles = procRSS(sp.PID), procFDs(sp.PID)
		samples = append(samples, s)
		fmt.Fprintf(stdout, "%6.0fs  %5.0f/s  p99 %5.1f ms  WAL %5.1f MB (largest %5.1f)  db %6.1f MB  RSS %5.1f MB  fds %3d  goroutines %4d  heap %5.1f MB  errors %d\n",
			s.At.Seconds(), s.PerSecond, s.P99MS, s.WALMB, s.WALLargestMB, s.DBMB, s.RSSMB, s.OpenFiles, s.Goroutines, s.HeapMB, s.Errors)
		// The record is rewritten after every interval, so a soak cut short
		// (a killed terminal, a rebooted machine) still leaves what it saw.
		if err := writeSoakRecord(*out, *plot, samples); err != nil {
			return err
		}
	}
	cancel()
	wg.Wait()
	fmt.Fprintf(stdout, "Recorded %d intervals in %s and %s.\n", len(samples), *out, *plot)
	return nil
}

func mustInt(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// procRSS is a process's resident memory now, in MB.
func procRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// procFDs is how many files a process has open.
func procFDs(pid int) int {
	es, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(es)
}

func writeSoakRecord(csvPath, svgPath string, samples []soakSample) error {
	if err := writeSoakCSV(csvPath, samples); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(svgPath), 0o755); err != nil {
		return err
	}
	return os.WriteFile(svgPath, soakSVG(samples), 0o644)
}

func writeSoakCSV(path string, samples []soakSample) error {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.Write([]string{"seconds", "submissions_per_s", "p99_ms", "wal_mb", "wal_largest_mb", "db_mb", "rss_mb", "open_files", "goroutines", "heap_mb", "wal_restarts", "exports", "erasures", "api_reads", "errors"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	for _, s := range samples {
		w.Write([]string{f(s.At.Seconds()), f(s.PerSecond), f(s.P99MS), f(s.WALMB), f(s.WALLargestMB), f(s.DBMB), f(s.RSSMB), strconv.Itoa(s.OpenFiles),
			strconv.Itoa(s.Goroutines), f(s.HeapMB), strconv.Itoa(s.WALRestarts), strconv.FormatInt(s.Exports, 10),
			strconv.FormatInt(s.Erasures, 10), strconv.FormatInt(s.Reads, 10), strconv.Itoa(s.Errors)})
	}
	w.Flush()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// soakSVG draws each recorded series over time, one small chart each, each
// scaled from zero to its own maximum, so a series that grows shows it.
func soakSVG(samples []soakSample) []byte {
	series := []struct {
		name, unit string
		v          func(soakSample) float64
	}{
		{"submissions/s", "", func(s soakSample) float64 { return s.PerSecond }},
		{"p99", "ms", func(s soakSample) float64 { return s.P99MS }},
		{"largest WAL so far", "MB", func(s soakSample) float64 { return s.WALLargestMB }},
		{"database", "MB", func(s soakSample) float64 { return s.DBMB }},
		{"RSS", "MB", func(s soakSample) float64 { return s.RSSMB }},
		{"open files", "", func(s soakSample) float64 { return float64(s.OpenFiles) }},
		{"goroutines", "", func(s soakSample) float64 { return float64(s.Goroutines) }},
		{"heap", "MB", func(s soakSample) float64 { return s.HeapMB }},
	}
	const w, h, pad = 360, 150, 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`, 2*w, (len(series)+1)/2*h)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>`)
	var end float64
	if len(samples) > 0 {
		end = samples[len(samples)-1].At.Seconds()
	}
	for i, sr := range series {
		x0, y0 := float64(i%2*w+pad), float64(i/2*h+20)
		cw, ch := float64(w-2*pad), float64(h-50)
		top := 0.0
		for _, s := range samples {
			top = math.Max(top, sr.v(s))
		}
		if top == 0 {
			top = 1
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f">%s (max %.1f %s, over %.0f min)</text>`, x0, y0-6, sr.name, top, sr.unit, end/60)
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#ccc"/>`, x0, y0, cw, ch)
		var pts []string
		for _, s := range samples {
			x := x0 + cw*s.At.Seconds()/math.Max(end, 1)
			y := y0 + ch - ch*sr.v(s)/top
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="#1f5fa8" stroke-width="1.5"/>`, strings.Join(pts, " "))
	}
	b.WriteString(`</svg>`)
	return []byte(b.String())
}
