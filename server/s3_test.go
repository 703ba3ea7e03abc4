package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/miniotest"
)

// TestObjectStorage runs devices against a server that keeps files in a real
// MinIO: files land there encrypted, and when MinIO fails in the middle of an
// upload the device gets 503 with Retry-After, nothing is kept, and its
// retry succeeds once MinIO is back.
func TestObjectStorage(t *testing.T) {
	m := miniotest.Start(t)
	cfg := m.Config("haven-e2e")
	e := newEnvWith(t, storage.Options{S3: &cfg})
	pid, dev := e.project()
	const marker = "E2EPHOTOMARKER"
	photo := bytes.Repeat([]byte(marker+" "), 20_000)
	if res, err := dev.Submit(ctx, instance("uuid:s3-1", "A", "p.jpg"), []collect.File{collect.BytesFile("p.jpg", photo)}); err != nil || res.Status != 201 {
		t.Fatalf("submit: %+v %v", res, err)
	}
	if !bytes.Equal(e.attachment(pid, "uuid:s3-1", "p.jpg"), photo) {
		t.Fatal("photo read back from MinIO differs")
	}
	if hits := scanDirFor(m.DataDir, marker); len(hits) > 0 {
		t.Fatalf("plaintext in MinIO: %v", hits)
	}
	if n := len(e.blobFiles()); n != 0 {
		t.Fatalf("%d files in the local store: everything should be in MinIO", n)
	}
	rows := e.blobRows()

	// MinIO dies 5 MB into a 20 MB upload.
	big := bytes.Repeat([]byte("v"), 20<<20)
	doc := instance("uuid:s3-2", "B", "video.mp4")
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		fw, _ := mw.CreateFormFile("xml_submission_file", "submission.xml")
		fw.Write(doc)
		fw, _ = mw.CreateFormFile("video.mp4", "video.mp4")
		fw.Write(big[:5<<20])
		time.Sleep(200 * time.Millisecond)
		m.Stop()
		fw.Write(big[5<<20:])
		pw.CloseWithError(mw.Close())
	}()
	req, _ := http.NewRequest("POST", dev.ServerURL+"/submission", pr)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the device got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "nothing was saved") {
		t.Fatalf("during the outage: %d, Retry-After %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if _, code := e.submission(pid, "uuid:s3-2"); code != 404 {
		t.Fatalf("a submission was kept: %d", code)
	}
	if e.blobRows() != rows {
		t.Fatal("a file record was kept")
	}

	// MinIO is back: Collect sends the form again, and it is stored whole.
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	res, err := dev.Submit(ctx, doc, []collect.File{collect.BytesFile("video.mp4", big)})
	if err != nil || res.Status != 201 {
		t.Fatalf("retry after the outage: %+v %v", res, err)
	}
	if got := e.attachment(pid, "uuid:s3-2", "video.mp4"); !bytes.Equal(got, big) {
		t.Fatalf("video read back: %d bytes", len(got))
	}
	// Erasure deletes the objects from MinIO.
	before := 0
	e.st.Blobs.Stores[storage.StoreS3].List(ctx, func(string, time.Time) error { before++; return nil })
	e.admin("DELETE", fmt.Sprintf("/v1/projects/%d/forms/household/submissions/uuid:s3-2", pid), nil, nil)
	after := 0
	e.st.Blobs.Stores[storage.StoreS3].List(ctx, func(string, time.Time) error { after++; return nil })
	if after != before-1 {
		t.Fatalf("objects in MinIO: %d before erasure, %d after", before, after)
	}

	// Nothing orphaned survives garbage collection past its grace period.
	e.st.DB.Now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	if _, err := e.st.Blobs.CollectGarbage(ctx, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	objects := 0
	e.st.Blobs.Stores[storage.StoreS3].List(ctx, func(string, time.Time) error { objects++; return nil })
	if objects != e.blobRows() {
		t.Fatalf("%d objects in MinIO for %d records", objects, e.blobRows())
	}
}

// Files on a distributed MinIO (four servers, objects erasure-coded across
// them, as a deployment spreads MinIO over machines): devices keep
// submitting while one server dies, and go on being answered; every
// submission acknowledged is there with its photo intact, while that
// server is down and after it comes back.
func TestDistributedObjectStorage(t *testing.T) {
	mc := miniotest.StartCluster(t, 4)
	cfg := mc.Config("haven-dist")
	e := newEnvWith(t, storage.Options{S3: &cfg})
	pid, dev := e.project()
	var mu sync.Mutex
	acked := map[string][]byte{}
	load, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for d := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; load.Err() == nil; i++ {
				id := fmt.Sprintf("uuid:dist-%d-%d", d, i)
				photo := bytes.Repeat([]byte(id+" "), 3000)
				res, err := dev.Submit(load, instance(id, "A", "p.jpg"), []collect.File{collect.BytesFile("p.jpg", photo)})
				if err == nil && res.Status == 201 {
					mu.Lock()
					acked[id] = photo
					mu.Unlock()
				}
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	time.Sleep(time.Second)
	mc.Nodes[3].Stop() // one MinIO server dies
	before := count()
	time.Sleep(4 * time.Second) // the others notice within MinIO's timeouts
	stop()
	wg.Wait()
	if before == 0 || count() <= before {
		t.Fatalf("%d submissions acknowledged before a MinIO server died, %d in all: devices must go on being answered", before, count())
	}
	check := func(when string) {
		t.Helper()
		for id, photo := range acked {
			if !bytes.Equal(e.attachment(pid, id, "p.jpg"), photo) {
				t.Fatalf("%s: the photo of acknowledged %s is not intact", when, id)
			}
		}
	}
	check("with one MinIO server down")
	if err := mc.Nodes[3].Restart(); err != nil {
		t.Fatal(err)
	}
	check("after it came back")
	t.Logf("%d submissions acknowledged, %d of them after a MinIO server died", count(), count()-before)
}
