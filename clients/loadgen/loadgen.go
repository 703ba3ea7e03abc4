// Package loadgen simulates many enumerators syncing with Haven at once,
// each an ODK Collect client (clients/collect): form list, form download,
// then submissions of generated valid answers, optionally with a photo,
// think time between them, and flaky connections that cut an upload half
// way so the device retries it whole, as Collect does. It measures what the
// devices see: throughput, latency percentiles, errors by kind, bytes.
package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/formspec"
)

// Modes: what each device does in its loop.
const (
	ModeSubmit   = "submit"   // send filled-in forms (HEAD + POST per submission, as Collect)
	ModeFormList = "formlist" // fetch the form list and the manifest
)

// Config is one load run.
type Config struct {
	ServerURL string // a device server URL: {origin}/v1/key/{token}/projects/{id}
	Mode      string
	FormID    string // the form to fill in; empty: the first listed
	Devices   int
	Duration  time.Duration
	Count     int           // stop after this many operations in all; 0: run for Duration
	Think     time.Duration // mean pause between a device's operations (uniform, 0.5 to 1.5 times)
	Photo     int           // bytes of the photo sent with each submission; 0: none
	Flaky     float64       // fraction of submissions whose first attempt is cut mid-upload
	Timeout   time.Duration // per request
}

// Report is what a run measured.
type Report struct {
	Mode       string         `json:"mode"`
	Devices    int            `json:"devices"`
	Seconds    float64        `json:"seconds"`
	Operations int            `json:"operations"`
	PerSecond  float64        `json:"perSecond"`
	LatencyMS  Latency        `json:"latencyMs"`
	Errors     map[string]int `json:"errors"`
	BytesSent  int64          `json:"bytesSent"`
	CutUploads int            `json:"cutUploads"`
	// ServerPeakRSSMB is filled in by callers that started the server.
	ServerPeakRSSMB float64 `json:"serverPeakRssMb,omitempty"`
}

// Latency percentiles of successful operations, in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Run runs the load and reports. It stops at Duration or Count, whichever
// comes first, or when ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Devices < 1 {
		return nil, errors.New("loadgen needs at least one device")
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeSubmit
	}
	if cfg.Mode != ModeSubmit && cfg.Mode != ModeFormList {
		return nil, fmt.Errorf("unknown mode %q: use %s or %s", cfg.Mode, ModeSubmit, ModeFormList)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Minute
	}
	if cfg.Duration == 0 {
		cfg.Duration = 10 * time.Second
	}
	transport := &http.Transport{MaxIdleConnsPerHost: cfg.Devices + 1, MaxConnsPerHost: 0, IdleConnTimeout: time.Minute}
	defer transport.CloseIdleConnections()

	// Every device first syncs the form, as a tablet does before collecting.
	devices := make([]*device, cfg.Devices)
	for i := range devices {
		d, err := newDevice(ctx, cfg, transport, uint64(i))
		if err != nil {
			return nil, fmt.Errorf("device %d: %w", i, err)
		}
		devices[i] = d
	}

	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var budget atomic.Int64
	budget.Store(int64(cfg.Count))
	start := time.Now()
	var wg gosync.WaitGroup
	for _, d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.loop(runCtx, cfg, &budget)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	rep := &Report{Mode: cfg.Mode, Devices: cfg.Devices, Seconds: elapsed.Seconds(), Errors: map[string]int{}}
	var lat []time.Duration
	for _, d := range devices {
		lat = append(lat, d.latencies...)
		rep.BytesSent += d.bytes
		rep.CutUploads += d.cuts
		for k, v := range d.errors {
			rep.Errors[k] += v
		}
	}
	rep.Operations = len(lat)
	rep.PerSecond = float64(len(lat)) / elapsed.Seconds()
	rep.LatencyMS = percentiles(lat)
	return rep, nil
}

func percentiles(lat []time.Duration) Latency {
	if len(lat) == 0 {
		return Latency{}
	}
	slices.Sort(lat)
	at := func(p float64) float64 {
		i := int(p*float64(len(lat))+0.5) - 1
		i = max(0, min(i, len(lat)-1))
		return float64(lat[i].Microseconds()) / 1000
	}
	return Latency{P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: float64(lat[len(lat)-1].Microseconds()) / 1000}
}

type device struct {
	client    *collect.Client
	flaky     *collect.Client // the same device over a connection that drops
	form      *formspec.Form
	manifest  string
	photo     []byte
	rand      *mrand.Rand
	latencies []time.Duration
	errors    map[string]int
	bytes     int64
	cuts      int
}

func newDevice(ctx context.Context, cfg Config, transport http.RoundTripper, seed uint64) (*device, error) {
	c := collect.New(cfg.ServerURL)
	c.HTTP = &http.Client{Transport: transport, Timeout: cfg.Timeout}
	d := &device{client: c, rand: mrand.New(mrand.NewPCG(seed, uint64(time.Now().UnixNano()))), errors: map[string]int{}}
	forms, err := c.FormList(ctx)
	if err != nil {
		return nil, err
	}
	var entry *collect.FormEntry
	for i := range forms {
		if cfg.FormID == "" || forms[i].FormID == cfg.FormID {
			entry = &forms[i]
			break
		}
	}
	if entry == nil {
		return nil, fmt.Errorf("the form list has no form %q", cfg.FormID)
	}
	xml, err := c.Download(ctx, entry.DownloadURL, entry.Hash)
	if err != nil {
		return nil, err
	}
	if d.form, err = formspec.Parse(xml); err != nil {
		return nil, err
	}
	d.manifest = entry.ManifestURL
	if cfg.Photo > 0 {
		d.photo = make([]byte, cfg.Photo)
		for i := range d.photo {
			d.photo[i] = byte(d.rand.Uint32())
		}
	}
	d.flaky = collect.New(cfg.ServerURL)
	d.flaky.DeviceID = c.DeviceID
	// Its own connections: a cut one must never be reused by the retry.
	d.flaky.HTTP = &http.Client{Transport: cutTransport{base: &http.Transport{}}, Timeout: cfg.Timeout}
	return d, nil
}

// jitter returns a pause of d on average, uniform between 0.5 d and 1.5 d:
// real devices are not synchronised, and a load whose devices all wait the
// same time arrives in bursts that only the load generator makes.
func (d *device) jitter(think time.Duration) time.Duration {
	return think/2 + time.Duration(d.rand.Int64N(int64(think)+1))
}

func (d *device) loop(ctx context.Context, cfg Config, budget *atomic.Int64) {
	if cfg.Think > 0 {
		// Stagger the start over one think time.
		select {
		case <-time.After(time.Duration(d.rand.Int64N(int64(cfg.Think) + 1))):
		case <-ctx.Done():
			return
		}
	}
	for ctx.Err() == nil {
		if cfg.Count > 0 && budget.Add(-1) < 0 {
			return
		}
		if cfg.Mode == ModeFormList {
			// Each request is an operation: the form list, then the manifest.
			d.measure(ctx, func(*time.Time) error { _, err := d.client.FormList(ctx); return err })
			if d.manifest != "" {
				d.measure(ctx, func(*time.Time) error { _, err := d.client.Manifest(ctx, d.manifest); return err })
			}
		} else {
			d.measure(ctx, func(start *time.Time) error { return d.submit(ctx, cfg, start) })
		}
		if cfg.Think > 0 {
			select {
			case <-time.After(d.jitter(cfg.Think)):
			case <-ctx.Done():
				return
			}
		}
	}
}

// measure runs one operation and records its latency or its error. A
// submission whose first attempt was cut restarts the clock for its retry.
func (d *device) measure(ctx context.Context, op func(start *time.Time) error) {
	start := time.Now()
	err := op(&start)
	if ctx.Err() != nil && err != nil {
		return // the run ended mid-request: not the server's fault
	}
	if err != nil {
		d.errors[errorKind(err)]++
		return
	}
	d.latencies = append(d.latencies, time.Since(start))
}

func (d *device) submit(ctx context.Context, cfg Config, start *time.Time) error {
	var files []collect.File
	photoName := ""
	if len(d.photo) > 0 {
		photoName = fmt.Sprintf("%d.jpg", time.Now().UnixNano())
		files = []collect.File{collect.BytesFile(photoName, d.photo)}
	}
	doc := Instance(d.form, formspec.NewInstanceID(), photoName, d.rand)
	if cfg.Flaky > 0 && d.rand.Float64() < cfg.Flaky {
		// The connection drops half way through the upload; Collect keeps
		// the form and sends it again, whole.
		if _, err := d.flaky.Submit(ctx, doc, files); err == nil {
			return errors.New("a cut upload was acknowledged")
		}
		d.cuts++
		*start = time.Now()
	}
	res, err := d.client.Submit(ctx, doc, files)
	if err != nil {
		return err
	}
	d.bytes += int64(len(doc) + len(d.photo))
	if res.Status != http.StatusCreated {
		return fmt.Errorf("HTTP %d", res.Status)
	}
	return nil
}

func errorKind(err error) string {
	if st := collect.StatusOf(err); st != 0 {
		return fmt.Sprintf("HTTP %d", st)
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "timeout") || strings.Contains(s, "deadline"):
		return "timeout"
	case strings.Contains(s, "connection refused"), strings.Contains(s, "reset"), strings.Contains(s, "EOF"):
		return "connection"
	}
	return "other: " + s
}

// cutTransport drops a POST's connection half way through its body.
type cutTransport struct{ base http.RoundTripper }

func (t cutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && req.Body != nil {
		req.Body = &cutBody{r: req.Body, left: 1024}
	}
	return t.base.RoundTrip(req)
}

type cutBody struct {
	r    io.ReadCloser
	left int
}

var errCut = errors.New("simulated network cut")

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errCut
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= n
	return n, err
}

func (b *cutBody) Close() error { return b.r.Close() }

// Summary is the report as a few lines for people.
func (r *Report) Summary() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s: %d devices, %.1f s, %d operations, %.0f/s\n", r.Mode, r.Devices, r.Seconds, r.Operations, r.PerSecond)
	fmt.Fprintf(&b, "latency ms: p50 %.2f  p95 %.2f  p99 %.2f  max %.2f\n", r.LatencyMS.P50, r.LatencyMS.P95, r.LatencyMS.P99, r.LatencyMS.Max)
	fmt.Fprintf(&b, "sent %.1f MB", float64(r.BytesSent)/1e6)
	if r.CutUploads > 0 {
		fmt.Fprintf(&b, ", %d uploads cut and retried", r.CutUploads)
	}
	if r.ServerPeakRSSMB > 0 {
		fmt.Fprintf(&b, ", server peak RSS %.1f MB", r.ServerPeakRSSMB)
	}
	b.WriteString("\n")
	if len(r.Errors) == 0 {
		b.WriteString("errors: none\n")
	} else {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "errors: %s: %d\n", k, r.Errors[k])
		}
	}
	return b.String()
}
