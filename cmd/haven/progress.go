package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress on a terminal for long work (uploads, exports): a bar with the
// bytes done, the rate and the time left when the total is known; just the
// bytes and the rate when it is not. Nothing at all when stderr is not a
// terminal, so scripts and logs stay clean.

type progress struct {
	mu     sync.Mutex
	w      io.Writer
	label  string
	total  int64 // 0: unknown
	done   int64
	start  time.Time
	last   time.Time
	drawn  bool
	closed bool
}

// newProgress returns a progress line on w, or nil when w is not a terminal.
func newProgress(w io.Writer, label string, total int64) *progress {
	f, ok := w.(*os.File)
	if !ok || !isTerminal(f) {
		return nil
	}
	return &progress{w: w, label: label, total: total, start: time.Now()}
}

func (p *progress) add(n int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += int64(n)
	if now := time.Now(); now.Sub(p.last) >= 200*time.Millisecond {
		p.last = now
		p.draw()
	}
}

// finish draws the last state and ends the line.
func (p *progress) finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	if p.drawn {
		p.draw()
		fmt.Fprintln(p.w)
	}
}

func (p *progress) draw() {
	p.drawn = true
	elapsed := time.Since(p.start).Seconds()
	rate := float64(p.done) / max(elapsed, 0.001)
	line := fmt.Sprintf("%s  %s  %s/s", p.label, bytesHuman(p.done), bytesHuman(int64(rate)))
	if p.total > 0 {
		frac := min(float64(p.done)/float64(p.total), 1)
		const width = 24
		bar := strings.Repeat("█", int(frac*width)) + strings.Repeat("░", width-int(frac*width))
		left := "--:--"
		if rate > 0 {
			secs := int(float64(p.total-p.done) / rate)
			left = fmt.Sprintf("%02d:%02d", secs/60, secs%60)
		}
		line = fmt.Sprintf("%s  %s %3.0f%%  %s of %s  %s/s  %s left", p.label, bar, frac*100, bytesHuman(p.done), bytesHuman(p.total), bytesHuman(int64(rate)), left)
	}
	fmt.Fprintf(p.w, "\r%s\033[K", line)
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// progressReader counts what is read from r on a progress line (uploads).
func progressReader(r io.Reader, total int64, label string, stderr io.Writer) io.Reader {
	p := newProgress(stderr, label, total)
	if p == nil {
		return r
	}
	return &countingReader{r: r, p: p}
}

type countingReader struct {
	r io.Reader
	p *progress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.add(n)
	if err == io.EOF {
		c.p.finish()
	}
	return n, err
}

// progressWriter counts what is written to w on a progress line
// (downloads); call the returned finish when done.
func progressWriter(w io.Writer, label string, stderr io.Writer) (io.Writer, func()) {
	p := newProgress(stderr, label, 0)
	if p == nil {
		return w, func() {}
	}
	return &countingWriter{w: w, p: p}, p.finish
}

type countingWriter struct {
	w io.Writer
	p *progress
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.p.add(n)
	return n, err
}

// statusLine redraws one line on a terminal, at most five times a second
// (the last call always shows when done is called); nothing elsewhere.
type statusLine struct {
	w    io.Writer
	last time.Time
	text string
}

func newStatusLine(w io.Writer) *statusLine {
	f, ok := w.(*os.File)
	if !ok || !isTerminal(f) {
		return nil
	}
	return &statusLine{w: w}
}

func (s *statusLine) set(format string, args ...any) {
	if s == nil {
		return
	}
	s.text = fmt.Sprintf(format, args...)
	if now := time.Now(); now.Sub(s.last) >= 200*time.Millisecond {
		s.last = now
		fmt.Fprintf(s.w, "\r%s\033[K", s.text)
	}
}

func (s *statusLine) done() {
	if s != nil && s.text != "" {
		fmt.Fprintf(s.w, "\r%s\033[K\n", s.text)
	}
}
