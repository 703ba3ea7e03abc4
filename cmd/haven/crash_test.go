package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/clients/rest"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/miniotest"
	"github.com/haven-org/haven/storage/pgtest"
)

// buildHaven compiles the binary once per test run.
func buildHaven(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "haven")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startHaven runs `haven serve` and waits until it answers.
func startHaven(t *testing.T, bin, data, addr string, extra ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--data", data, "--listen", addr}, extra...)...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if resp, err := http.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			return cmd
		}
		time.Sleep(25 * time.Millisecond)
	}
	cmd.Process.Kill()
	t.Fatal("haven did not start")
	return nil
}

type sent struct {
	xml, photo []byte
}

// TestCrash kills the server with SIGKILL while devices upload, restarts it,
// and checks that every submission acknowledged with 201 is there, whole and
// once; that nothing partial is visible; that devices' retries of what was
// not acknowledged succeed without duplicating; and that the database is
// sound. On SQLite, and on PostgreSQL (--database, a throwaway cluster).
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a real server")
	}
	bin := buildHaven(t)
	t.Run("sqlite", func(t *testing.T) { crash(t, bin, "", 1) })
	t.Run("postgres", func(t *testing.T) { crash(t, bin, pgtest.Start(t).DSN(), 1) })
	// Three nodes on one database and object store, each with a data
	// directory of its own as on three machines, devices spread over them,
	// a different node killed each round while the others serve.
	t.Run("postgres-3-nodes", func(t *testing.T) { crash(t, bin, pgtest.Start(t).DSN(), 3) })
}

func crash(t *testing.T, bin, database string, nodes int) {
	data := t.TempDir()
	// Every node holds the same master key, from a file outside the data
	// directories.
	keyFile := filepath.Join(t.TempDir(), "master.key")
	extra := []string{"--master-key-file", keyFile}
	if database != "" {
		extra = append(extra, "--database", database)
	}
	const email, password = "crash@example.org", "crash test password"
	var out bytes.Buffer
	if err := run(context.Background(), append([]string{"admin", "create", "--email", email, "--data", data}, extra...), strings.NewReader(password+"\n"), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	serve := extra
	dirs := []string{data}
	var s3 *storage.S3Config
	if nodes > 1 {
		// Several nodes keep their files and keys where all of them read
		// them, and each its own data directory.
		m := miniotest.Start(t)
		cfg := m.Config("haven-crash")
		s3 = &cfg
		serve = append(slices.Clone(extra), "--s3-endpoint", m.Addr, "--s3-bucket", "haven-crash",
			"--s3-access-key", miniotest.AccessKey, "--s3-secret-key", miniotest.SecretKey)
		for range nodes - 1 {
			dirs = append(dirs, t.TempDir())
		}
	}
	addrs := make([]string, nodes)
	cmds := make([]*exec.Cmd, nodes)
	for i := range addrs {
		addrs[i] = freeAddr(t)
		cmds[i] = startHaven(t, bin, dirs[i], addrs[i], serve...)
	}
	addr := addrs[0]
	ctx := context.Background()
	a, err := rest.Login(ctx, "http://"+addr, email, password)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := a.CreateProject(ctx, "Crash")
	if err != nil {
		t.Fatal(err)
	}
	xform, err := os.ReadFile("../../formspec/testdata/household.xml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateForm(ctx, pr.ID, xform, true); err != nil {
		t.Fatal(err)
	}
	au, err := a.CreateAppUser(ctx, pr.ID, "T")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.AssignForm(ctx, pr.ID, "household", au.ID); err != nil {
		t.Fatal(err)
	}
	serverURL := au.ServerURL

	var mu gosync.Mutex
	acked := map[string]sent{}
	all := map[string]sent{}
	rounds, devices := 4, 8
	if os.Getenv("CI") != "" {
		rounds = 3
	}
	n := 0
	for round := 0; round < rounds; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		var wg gosync.WaitGroup
		for d := 0; d < devices; d++ {
			wg.Add(1)
			go func(d int) {
				defer wg.Done()
				// Devices are spread over the nodes (the same app user's URL on each).
				dev := collect.New(strings.Replace(serverURL, addrs[0], addrs[d%nodes], 1))
				for i := 0; ctx.Err() == nil; i++ {
					mu.Lock()
					n++
					id := fmt.Sprintf("uuid:crash-%d-%d-%d", round, d, n)
					mu.Unlock()
					s := sent{xml: household(id), photo: bytes.Repeat([]byte(id), 2000)}
					mu.Lock()
					all[id] = s
					mu.Unlock()
					res, err := dev.Submit(ctx, s.xml, []collect.File{collect.BytesFile("p.jpg", s.photo)})
					if err == nil && res.Status == 201 {
						mu.Lock()
						acked[id] = s
						mu.Unlock()
					} else {
						time.Sleep(50 * time.Millisecond) // its node is down: wait, as Collect would
					}
				}
			}(d)
		}
		time.Sleep(time.Duration(400+round*150) * time.Millisecond)
		victim := round % nodes     // with several nodes, a different one each round
		cmds[victim].Process.Kill() // SIGKILL: no shutdown, no flush
		cmds[victim].Wait()
		if nodes > 1 {
			time.Sleep(300 * time.Millisecond) // the others go on serving their devices
		}
		cancel()
		wg.Wait()
		cmds[victim] = startHaven(t, bin, dirs[victim], addrs[victim], serve...)
	}
	defer func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}()
	if len(acked) < 10 {
		t.Fatalf("only %d submissions were acknowledged: the test did not load the server", len(acked))
	}

	base := fmt.Sprintf("/v1/projects/%d/forms/household/submissions", pr.ID)
	check := func(id string, s sent) {
		t.Helper()
		x, err := a.Get(ctx, base+"/"+id+".xml")
		if err != nil || !bytes.Equal(x, s.xml) {
			t.Errorf("acknowledged %s: XML intact %v (%v)", id, bytes.Equal(x, s.xml), err)
			return
		}
		p, err := a.Get(ctx, base+"/"+id+"/attachments/p.jpg")
		if err != nil || sha256.Sum256(p) != sha256.Sum256(s.photo) {
			t.Errorf("acknowledged %s: photo intact %v (%v)", id, bytes.Equal(p, s.photo), err)
		}
	}
	for id, s := range acked {
		check(id, s)
	}
	// Nothing partial is visible: every listed submission has its XML and its photo.
	body, err := a.Get(ctx, base+"?limit=10000")
	if err != nil {
		t.Fatal(err)
	}
	var listed []struct {
		InstanceID     string
		CurrentVersion struct{ AttachmentsPresent, AttachmentsExpected int }
	}
	json.Unmarshal(body, &listed)
	seen := map[string]bool{}
	for _, l := range listed {
		if seen[l.InstanceID] {
			t.Errorf("%s listed twice", l.InstanceID)
		}
		seen[l.InstanceID] = true
		if l.CurrentVersion.AttachmentsPresent != l.CurrentVersion.AttachmentsExpected {
			t.Errorf("%s is visible with %d of %d files", l.InstanceID, l.CurrentVersion.AttachmentsPresent, l.CurrentVersion.AttachmentsExpected)
		}
		if s, ok := all[l.InstanceID]; ok {
			check(l.InstanceID, s)
		}
	}
	// Devices retry what was not acknowledged: it succeeds, once.
	dev := collect.New(serverURL)
	retried := 0
	for id, s := range all {
		if _, ok := acked[id]; ok {
			continue
		}
		res, err := dev.Submit(ctx, s.xml, []collect.File{collect.BytesFile("p.jpg", s.photo)})
		if err != nil || res.Status != 201 {
			t.Fatalf("retry of %s after restart: %+v %v", id, res, err)
		}
		check(id, s)
		retried++
	}
	if body, err = a.Get(ctx, base+"?limit=10000"); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(body, &listed)
	if len(listed) != len(all) {
		t.Fatalf("%d submissions stored for %d sent", len(listed), len(all))
	}
	t.Logf("%d rounds: %d acknowledged, %d retried after a crash, %d stored", rounds, len(acked), retried, len(listed))
	if nodes > 1 {
		exportAcrossNodes(t, a, addrs, pr.ID, len(listed))
	}

	for _, c := range cmds {
		c.Process.Kill()
		c.Wait()
	}
	st, err := storage.OpenDir(context.Background(), data, storage.Options{Database: database, S3: s3, Key: storage.KeySource{File: keyFile}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if v, err := st.DB.IntegrityCheck(context.Background()); err != nil || v != "ok" {
		t.Fatalf("integrity check: %q %v", v, err)
	}
	// One audit chain, however many nodes wrote it and were killed.
	if v, err := st.VerifyAudit(context.Background()); err != nil || !v.OK {
		t.Fatalf("the audit chain: %+v %v", v, err)
	}
}

func household(id string) []byte {
	return []byte(fmt.Sprintf(`<household xmlns:orx="http://openrosa.org/xforms" id="household" version="2026110101"><head_name>Crash</head_name><members>2</members><shelter><photo>p.jpg</photo></shelter><orx:meta><orx:instanceID>%s</orx:instanceID></orx:meta></household>`, id))
}

// exportAcrossNodes starts a background export on one node, watches it on
// another and downloads it from a third, as through a balancer that is
// not sticky; the file holds every submission, and is gone from every
// node once downloaded.
func exportAcrossNodes(t *testing.T, a *rest.Client, addrs []string, projectID int64, want int) {
	t.Helper()
	ctx := context.Background()
	on := func(i int) *rest.Client {
		c := *a
		c.BaseURL = strings.Replace(a.BaseURL, addrs[0], addrs[i%len(addrs)], 1)
		return &c
	}
	base := fmt.Sprintf("/v1/projects/%d", projectID)
	var job struct{ ID, State, Error string }
	if err := on(0).Do(ctx, "POST", base+"/forms/household/export-jobs?format=csv", "", nil, &job); err != nil || job.ID == "" {
		t.Fatalf("starting an export on node 0: %+v %v", job, err)
	}
	for i := 1; job.State == "running"; i++ {
		if i > 600 {
			t.Fatalf("the export did not finish in a minute: %+v", job)
		}
		time.Sleep(100 * time.Millisecond)
		if err := on(1).Do(ctx, "GET", base+"/export-jobs/"+job.ID, "", nil, &job); err != nil {
			t.Fatalf("the job seen from node 1: %v", err)
		}
	}
	if job.State != "done" {
		t.Fatalf("the job, seen from node 1: %+v", job)
	}
	body, err := on(2).Get(ctx, base+"/export-jobs/"+job.ID+"/file")
	if err != nil {
		t.Fatalf("downloading from node 2: %v", err)
	}
	z, err := zip.NewReader(bytes.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := z.Open("household.csv")
	if err != nil {
		t.Fatal(err)
	}
	csv, _ := io.ReadAll(f)
	got := 0
	for _, line := range strings.Split(string(csv), "\n") {
		if strings.Contains(line, "uuid:crash-") {
			got++
		}
	}
	if got != want {
		t.Fatalf("the export downloaded from node 2 holds %d submissions, want %d", got, want)
	}
	for i := range addrs {
		if _, err := on(i).Get(ctx, base+"/export-jobs/"+job.ID+"/file"); err == nil {
			t.Fatalf("node %d serves the export again after its download", i)
		}
	}
}
