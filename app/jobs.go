package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
)

// Background exports: a large export is started, watched and downloaded
// when done, instead of held open for as long as it takes. Jobs are kept
// in the database, so that any node answers for a job another node runs
// (no balancer needs to be sticky): the node running one writes its
// progress every second, and a job not heard of for jobDead died with its
// node (it says so, and its owner starts it again). The finished file is
// streamed, encrypted as it is written, into a blob of the project (its
// key wrapped by the project key, so destroying the project makes any
// copy unreadable); no plaintext touches a disk. It is erased once
// downloaded, or JobLifetime after it finished.

// JobLifetime is how long a finished export waits to be downloaded.
const JobLifetime = time.Hour

// jobLimit bounds the exports one user may run at once, and all users.
const jobLimit, jobsLimit = 2, 8

const (
	jobBeat = time.Second // how often a running job's progress is written
	jobDead = time.Minute // a running job not heard of for this long died with its node
)

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

// jobDied is the error of a job whose node stopped while it ran.
const jobDied = "the server running it stopped before it finished"

func (s *Service) jobView(r *storage.ExportJobRow) *ExportJob {
	v := &ExportJob{ID: r.ID, ProjectID: r.ProjectID, XMLFormID: r.XMLFormID, State: r.State, Submissions: r.Submissions, Total: r.Total,
		Bytes: r.Bytes, FileName: r.FileName, ContentType: r.ContentType, Omitted: r.Omitted, Error: r.Error, StartedAt: r.StartedAt.UTC(),
		FinishedAt: r.FinishedAt, ExpiresAt: r.ExpiresAt}
	if v.Omitted == nil {
		v.Omitted = []string{}
	}
	switch {
	case r.State == "downloading":
		v.State = "done"
	case r.State == "running" && r.SeenAt.Before(s.now().Add(-jobDead)):
		v.State, v.Error = "failed", jobDied
	}
	return v
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
	mine, all, err := s.st.ExportJobs.Running(ctx, p.ActorID, s.now().Add(-jobDead))
	if err != nil {
		return nil, err
	}
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
	var id [12]byte
	rand.Read(id[:])
	row := &storage.ExportJobRow{ID: hex.EncodeToString(id[:]), OwnerID: p.ActorID, ProjectID: projectID, XMLFormID: xmlFormID, State: "running",
		Total: total, FileName: exp.FileName, ContentType: exp.ContentType, Omitted: exp.Omitted, StartedAt: s.now().UTC(), SeenAt: s.now()}
	if err := s.st.ExportJobs.Create(ctx, row); err != nil {
		return nil, err
	}
	go s.runJob(row, exp)
	return s.jobView(row), nil
}

// runJob writes an export into a new blob of its project, writing its
// progress as it goes, and records the blob when done.
func (s *Service) runJob(row *storage.ExportJobRow, exp *Export) {
	ctx := context.Background()
	var done, written atomic.Int64
	exp.src.counted = func() { done.Add(1) }
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(exp.Write(ctx, countingWriter{pw, &written}))
	}()
	stop := make(chan struct{})
	var beats sync.WaitGroup
	beats.Add(1)
	go func() {
		defer beats.Done()
		t := time.NewTicker(jobBeat)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.st.ExportJobs.Progress(ctx, row.ID, done.Load(), written.Load())
			}
		}
	}()
	file, err := s.st.Blobs.Put(ctx, row.ProjectID, pr, storage.PutOptions{})
	pr.CloseWithError(errors.Join(err, io.ErrClosedPipe)) // a store that failed leaves no writer waiting
	close(stop)
	beats.Wait()
	expires := s.now().Add(JobLifetime).UTC()
	if err != nil {
		s.log.Error("background export failed", "form", row.XMLFormID, "err", err)
		s.st.ExportJobs.Fail(ctx, row.ID, haven.ErrorMessage(err), expires)
		return
	}
	if err := s.st.ExportJobs.Finish(ctx, row.ID, file, done.Load(), written.Load(), expires); err != nil {
		s.st.Blobs.Discard(ctx, file)
		s.log.Error("recording a background export", "form", row.XMLFormID, "err", err)
	}
}

// SweepExportJobs erases the exports whose time is up, and those whose
// node died once they have been shown as failed for JobLifetime, as any
// failed export is (they hold no file); haven serve runs it every minute
// on every node.
func (s *Service) SweepExportJobs(ctx context.Context) (int, error) {
	now := s.now()
	return s.st.ExportJobs.Sweep(ctx, now, now.Add(-jobDead-JobLifetime))
}

// ownJob finds a job of p's; another's job is "not found", as it is none
// of their business that it exists.
func (s *Service) ownJob(ctx context.Context, p *haven.Principal, id string) (*storage.ExportJobRow, error) {
	r, err := s.st.ExportJobs.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if r == nil || p == nil || r.OwnerID != p.ActorID {
		return nil, haven.Errorf(haven.ENOTFOUND, "There is no export %s of yours: it was downloaded, or it expired (an hour after it finished). Start it again.", id)
	}
	return r, nil
}

// ExportJobStatus says how a background export is going.
func (s *Service) ExportJobStatus(ctx context.Context, p *haven.Principal, id string) (*ExportJob, error) {
	r, err := s.ownJob(ctx, p, id)
	if err != nil {
		return nil, err
	}
	return s.jobView(r), nil
}

// DownloadExport opens a finished background export, on whichever node
// ran it. Closing the reader erases the file: an export is downloaded once.
func (s *Service) DownloadExport(ctx context.Context, p *haven.Principal, id string) (_ io.ReadCloser, _ *ExportJob, err error) {
	r, err := s.ownJob(ctx, p, id)
	if err != nil {
		return nil, nil, err
	}
	v := s.jobView(r)
	e := s.event(ctx, p, "submission.export.download", v.ProjectID, objForm(v.ProjectID, v.XMLFormID))
	e.Details = map[string]any{"job": id, "bytes": v.Bytes}
	defer func() { s.record(ctx, e, err) }()
	switch {
	case v.State == "running":
		return nil, nil, haven.Errorf(haven.ECONFLICT, "Export %s is not finished: %d of %d submissions so far. Ask again when its state is done.", id, v.Submissions, v.Total)
	case v.State == "failed":
		s.st.ExportJobs.Remove(ctx, id)
		return nil, nil, haven.Errorf(haven.EINTERNAL, "Export %s failed (%s). Start it again.", id, v.Error)
	case r.State == "downloading":
		return nil, nil, haven.Errorf(haven.ENOTFOUND, "Export %s was already downloaded.", id)
	}
	rc, _, err := s.st.Blobs.Open(ctx, r.BlobID)
	if err != nil {
		return nil, nil, err
	}
	// The download takes the file: a second one, on any node, finds none.
	took, err := s.st.ExportJobs.Take(ctx, id, s.now().Add(JobLifetime))
	if err != nil || !took {
		rc.Close()
		if err == nil {
			err = haven.Errorf(haven.ENOTFOUND, "Export %s was already downloaded.", id)
		}
		return nil, nil, err
	}
	return &jobReader{r: rc, close: func() {
		rc.Close()
		s.st.ExportJobs.Remove(context.Background(), id)
	}}, v, nil
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
