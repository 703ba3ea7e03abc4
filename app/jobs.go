package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
)

// Background exports: a large export is started, watched and downloaded
// when done, instead of held open for as long as it takes. The finished
// file waits in an encrypted spool (a key that exists only in memory, a
// file already unlinked from the folder), so nothing of it survives the
// process; it is erased once downloaded, or JobLifetime after it finished.
// Jobs live in the memory of the node that runs them.

// JobLifetime is how long a finished export waits to be downloaded.
const JobLifetime = time.Hour

// jobLimit bounds the exports one user may run at once, and all users.
const jobLimit, jobsLimit = 2, 8

// ExportJob is a background export as its owner sees it.
type ExportJob struct {
	ID          string     `json:"id"`
	ProjectID   int64      `json:"projectId"`
	XMLFormID   string     `json:"xmlFormId"`
	State       string     `json:"state"` // running, done, failed
	Submissions int64      `json:"submissions"`
	Total       int        `json:"total"` // submissions the form held when the export began
	Bytes       int64      `json:"bytes"`
	FileName    string     `json:"fileName"`
	ContentType string     `json:"contentType"`
	Omitted     []string   `json:"omittedFields"`
	Error       string     `json:"error,omitempty"`
	StartedAt   time.Time  `json:"startedAt"`
	FinishedAt  *time.Time `json:"finishedAt,omitempty"`
	ExpiresAt   *time.Time `json:"expiresAt,omitempty"`
}

type job struct {
	mu     sync.Mutex
	view   ExportJob
	owner  int64
	spool  *storage.Spool
	done   atomic.Int64 // submissions written
	bytes  atomic.Int64
	cancel context.CancelFunc
	timer  *time.Timer
}

type exportJobs struct {
	mu   sync.Mutex
	byID map[string]*job
}

func (j *job) snapshot() *ExportJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	v := j.view
	v.Submissions, v.Bytes = j.done.Load(), j.bytes.Load()
	return &v
}

// erase closes a job's spool (its file is already unlinked: closing it
// frees the last trace) and forgets the job.
func (s *Service) eraseJob(id string) {
	s.jobs.mu.Lock()
	j := s.jobs.byID[id]
	delete(s.jobs.byID, id)
	s.jobs.mu.Unlock()
	if j == nil {
		return
	}
	j.cancel()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.timer != nil {
		j.timer.Stop()
	}
	if j.spool != nil {
		j.spool.Close()
		j.spool = nil
	}
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// StartExport begins an export in the background. Rights, clearance and
// the audit event are those of Export, decided now; the job belongs to
// the one who started it.
func (s *Service) StartExport(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, opts ExportOptions) (*ExportJob, error) {
	if p == nil {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "Sign in to export.")
	}
	s.jobs.mu.Lock()
	mine, all := 0, 0
	for _, j := range s.jobs.byID {
		if j.snapshot().State == "running" {
			all++
			if j.owner == p.ActorID {
				mine++
			}
		}
	}
	s.jobs.mu.Unlock()
	if mine >= jobLimit || all >= jobsLimit {
		return nil, &haven.Error{Code: haven.ETOOMANY, Message: "Too many exports are running: wait until one finishes (or download a finished one), then start this one.",
			Details: map[string]any{"retryAfterSeconds": 30}}
	}
	exp, err := s.Export(ctx, p, projectID, xmlFormID, opts)
	if err != nil {
		return nil, err
	}
	total, err := s.submissions.Count(ctx, exp.src.form.ID)
	if err != nil {
		return nil, err
	}
	spool, err := s.st.DB.Spool()
	if err != nil {
		return nil, err
	}
	var id [12]byte
	rand.Read(id[:])
	jctx, cancel := context.WithCancel(context.Background())
	j := &job{owner: p.ActorID, spool: spool, cancel: cancel, view: ExportJob{ID: hex.EncodeToString(id[:]), ProjectID: projectID, XMLFormID: xmlFormID,
		State: "running", Total: total, FileName: exp.FileName, ContentType: exp.ContentType, Omitted: exp.Omitted, StartedAt: s.now().UTC()}}
	exp.src.counted = func() { j.done.Add(1) }
	s.jobs.mu.Lock()
	if s.jobs.byID == nil {
		s.jobs.byID = map[string]*job{}
	}
	s.jobs.byID[j.view.ID] = j
	s.jobs.mu.Unlock()
	go func() {
		err := exp.Write(jctx, countingWriter{spool, &j.bytes})
		now := s.now().UTC()
		expires := now.Add(JobLifetime)
		j.mu.Lock()
		j.view.FinishedAt, j.view.ExpiresAt = &now, &expires
		if err != nil {
			j.view.State, j.view.Error = "failed", haven.ErrorMessage(err)
			if jctx.Err() == nil {
				s.log.Error("background export failed", "form", xmlFormID, "err", err)
			}
		} else {
			j.view.State = "done"
		}
		j.timer = time.AfterFunc(JobLifetime, func() { s.eraseJob(j.view.ID) })
		j.mu.Unlock()
	}()
	return j.snapshot(), nil
}

// ownJob finds a job of p's; another's job is "not found", as it is none
// of their business that it exists.
func (s *Service) ownJob(p *haven.Principal, id string) (*job, error) {
	s.jobs.mu.Lock()
	j := s.jobs.byID[id]
	s.jobs.mu.Unlock()
	if j == nil || p == nil || j.owner != p.ActorID {
		return nil, haven.Errorf(haven.ENOTFOUND, "There is no export %s of yours: it was downloaded, it expired (an hour after it finished), or the server restarted. Start it again.", id)
	}
	return j, nil
}

// ExportJobStatus says how a background export is going.
func (s *Service) ExportJobStatus(ctx context.Context, p *haven.Principal, id string) (*ExportJob, error) {
	j, err := s.ownJob(p, id)
	if err != nil {
		return nil, err
	}
	return j.snapshot(), nil
}

// DownloadExport opens a finished background export. Closing the reader
// erases the file: an export is downloaded once.
func (s *Service) DownloadExport(ctx context.Context, p *haven.Principal, id string) (_ io.ReadCloser, _ *ExportJob, err error) {
	j, err := s.ownJob(p, id)
	if err != nil {
		return nil, nil, err
	}
	v := j.snapshot()
	e := s.event(ctx, p, "submission.export.download", v.ProjectID, objForm(v.ProjectID, v.XMLFormID))
	e.Details = map[string]any{"job": id, "bytes": v.Bytes}
	defer func() { s.record(ctx, e, err) }()
	switch v.State {
	case "running":
		return nil, nil, haven.Errorf(haven.ECONFLICT, "Export %s is not finished: %d of %d submissions so far. Ask again when its state is done.", id, v.Submissions, v.Total)
	case "failed":
		s.eraseJob(id)
		return nil, nil, haven.Errorf(haven.EINTERNAL, "Export %s failed (%s). Start it again.", id, v.Error)
	}
	// The download takes the spool: a second one finds none.
	j.mu.Lock()
	spool := j.spool
	j.spool = nil
	j.mu.Unlock()
	if spool == nil {
		return nil, nil, haven.Errorf(haven.ENOTFOUND, "Export %s was already downloaded.", id)
	}
	r, err := spool.Reader()
	if err != nil {
		spool.Close()
		s.eraseJob(id)
		return nil, nil, err
	}
	return &jobReader{r: r, close: func() { spool.Close(); s.eraseJob(id) }}, v, nil
}

type jobReader struct {
	r     io.Reader
	close func()
	once  sync.Once
}

func (j *jobReader) Read(p []byte) (int, error) { return j.r.Read(p) }
func (j *jobReader) Close() error {
	j.once.Do(j.close)
	return nil
}
