package main

import (
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
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/storage"
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
func startHaven(t *testing.T, bin, data, addr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--data", data, "--listen", addr)
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

type api struct {
	t     *testing.T
	base  string
	token string
}

// send makes a request with the session token and returns the body and status.
func (a *api) send(method, path string, body []byte, ct string) ([]byte, int) {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b, resp.StatusCode
}

// do sends a request that must succeed and decodes its JSON answer into out.
func (a *api) do(method, path string, body []byte, ct string, out any) {
	a.t.Helper()
	b, st := a.send(method, path, body, ct)
	if st != 200 {
		a.t.Fatalf("%s %s: %d %s", method, path, st, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			a.t.Fatalf("%s: %v", b, err)
		}
	}
}

func (a *api) get(path string) ([]byte, int) { return a.send("GET", path, nil, "") }

type sent struct {
	xml, photo []byte
}

// TestCrash kills the server with SIGKILL while devices upload, restarts it,
// and checks that every submission acknowledged with 201 is there, whole and
// once; that nothing partial is visible; that devices' retries of what was
// not acknowledged succeed without duplicating; and that SQLite is sound.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a real server")
	}
	bin := buildHaven(t)
	data := t.TempDir()
	const email, password = "crash@example.org", "crash test password"
	var out bytes.Buffer
	if err := run(context.Background(), []string{"admin", "create", "--email", email, "--data", data}, strings.NewReader(password+"\n"), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := startHaven(t, bin, data, addr)
	a := &api{t: t, base: "http://" + addr}
	var sess struct{ Token string }
	a.do("POST", "/v1/sessions", []byte(fmt.Sprintf(`{"email":%q,"password":%q}`, email, password)), "application/json", &sess)
	a.token = sess.Token
	var pr struct{ ID int64 }
	a.do("POST", "/v1/projects", []byte(`{"name":"Crash"}`), "application/json", &pr)
	xform, err := os.ReadFile("../../formspec/testdata/household.xml")
	if err != nil {
		t.Fatal(err)
	}
	a.do("POST", fmt.Sprintf("/v1/projects/%d/forms?publish=true", pr.ID), xform, "application/xml", nil)
	var au struct{ Token string }
	a.do("POST", fmt.Sprintf("/v1/projects/%d/app-users", pr.ID), []byte(`{"displayName":"T"}`), "application/json", &au)
	serverURL := fmt.Sprintf("http://%s/v1/key/%s/projects/%d", addr, au.Token, pr.ID)

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
				dev := collect.New(serverURL)
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
					}
				}
			}(d)
		}
		time.Sleep(time.Duration(400+round*150) * time.Millisecond)
		cmd.Process.Kill() // SIGKILL: no shutdown, no flush
		cmd.Wait()
		cancel()
		wg.Wait()
		cmd = startHaven(t, bin, data, addr)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if len(acked) < 10 {
		t.Fatalf("only %d submissions were acknowledged: the test did not load the server", len(acked))
	}

	base := fmt.Sprintf("/v1/projects/%d/forms/household/submissions", pr.ID)
	check := func(id string, s sent) {
		t.Helper()
		x, st := a.get(base + "/" + id + ".xml")
		if st != 200 || !bytes.Equal(x, s.xml) {
			t.Errorf("acknowledged %s: XML %d, intact %v", id, st, bytes.Equal(x, s.xml))
			return
		}
		p, st := a.get(base + "/" + id + "/attachments/p.jpg")
		if st != 200 || sha256.Sum256(p) != sha256.Sum256(s.photo) {
			t.Errorf("acknowledged %s: photo %d, intact %v", id, st, bytes.Equal(p, s.photo))
		}
	}
	for id, s := range acked {
		check(id, s)
	}
	// Nothing partial is visible: every listed submission has its XML and its photo.
	body, _ := a.get(base + "?limit=10000")
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
		res, err := dev.Submit(context.Background(), s.xml, []collect.File{collect.BytesFile("p.jpg", s.photo)})
		if err != nil || res.Status != 201 {
			t.Fatalf("retry of %s after restart: %+v %v", id, res, err)
		}
		check(id, s)
		retried++
	}
	body, _ = a.get(base + "?limit=10000")
	json.Unmarshal(body, &listed)
	if len(listed) != len(all) {
		t.Fatalf("%d submissions stored for %d sent", len(listed), len(all))
	}
	t.Logf("%d rounds: %d acknowledged, %d retried after a crash, %d stored", rounds, len(acked), retried, len(listed))

	cmd.Process.Kill()
	cmd.Wait()
	st, err := storage.OpenDir(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if v, err := st.DB.IntegrityCheck(context.Background()); err != nil || v != "ok" {
		t.Fatalf("integrity check: %q %v", v, err)
	}
}

func household(id string) []byte {
	return []byte(fmt.Sprintf(`<household xmlns:orx="http://openrosa.org/xforms" id="household" version="2026110101"><head_name>Crash</head_name><members>2</members><shelter><photo>p.jpg</photo></shelter><orx:meta><orx:instanceID>%s</orx:instanceID></orx:meta></household>`, id))
}
