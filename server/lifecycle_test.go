package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven/clients/collect"
)

// A project's end closes it to devices; a legal hold defers destruction;
// after destruction the certificate is served and verifies.
func TestProjectLifecycle(t *testing.T) {
	e := newEnv(t)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	e.st.DB.Now = func() time.Time { return now }
	pid, dev := e.project()
	base := fmt.Sprintf("/v1/projects/%d", pid)
	var pr struct {
		EndDate         *time.Time
		RetentionDays   int
		DestructionDate *time.Time
		DaysLeft        *int
		Closed          bool
		Warning         string
		LegalHold       *struct{ Reason, Reference string }
		DestroyedAt     *time.Time
	}
	// An end date in the past closes the project at once: it needs a confirmation.
	var refusal struct{ Message string }
	if st := e.call("PATCH", base, e.token, map[string]any{"endDate": "2020-01-01", "retentionDays": 14}, &refusal); st != 400 || !strings.Contains(refusal.Message, "confirmPastEndDate") || !strings.Contains(refusal.Message, "destroyed for good") {
		t.Fatalf("an unconfirmed past end date: %d %q", st, refusal.Message)
	}
	e.admin("PATCH", base, map[string]any{"endDate": "2026-12-01", "retentionDays": 14}, &pr)
	if pr.DestructionDate == nil || !pr.DestructionDate.Equal(time.Date(2026, 12, 15, 0, 0, 0, 0, time.UTC)) || *pr.DaysLeft != 22 || pr.Closed || pr.Warning == "" {
		t.Fatalf("after setting the end: %+v", pr)
	}
	if st := e.call("PATCH", base, e.token, map[string]any{"endDate": "first of December"}, nil); st != 400 {
		t.Fatalf("a bad date: %d", st)
	}
	ctx := context.Background()
	if res, err := dev.Submit(ctx, instance("uuid:l1", "Amina"), nil); err != nil || res.Status != 201 {
		t.Fatalf("before the end: %+v %v", res, err)
	}

	// The end date: no forms to download, submissions refused with a clear message.
	now = time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	forms, err := dev.FormList(ctx)
	if err == nil && len(forms) != 0 {
		t.Fatalf("form list after the end: %+v", forms)
	}
	_, err = dev.Submit(ctx, instance("uuid:l2", "Baraka"), nil)
	var ce *collect.Error
	if err == nil || !errors.As(err, &ce) || ce.Status != 409 || !strings.Contains(ce.Message, "has ended") {
		t.Fatalf("submitting after the end: %v", err)
	}

	// A legal hold defers destruction past the date.
	e.token = e.login(adminEmail, adminPassword) // the session from before the clock moved has expired
	e.admin("POST", base+"/legal-hold", map[string]string{"reason": "Audit by the donor", "reference": "DONOR-2026-7"}, &pr)
	now = time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC)
	e.token = e.login(adminEmail, adminPassword)
	if _, err := e.st.Reap(ctx, false, "schedule"); err != nil {
		t.Fatal(err)
	}
	if e.submissionCount(pid) != 1 {
		t.Fatal("a project on hold lost its data")
	}
	if st := e.call("GET", base+"/destruction-certificate", e.token, nil, nil); st != 404 {
		t.Fatalf("certificate before destruction: %d", st)
	}
	e.admin("DELETE", base+"/legal-hold", nil, &pr)
	if _, err := e.st.Reap(ctx, false, "schedule"); err != nil {
		t.Fatal(err)
	}
	e.admin("GET", base, nil, &pr)
	if pr.DestroyedAt == nil {
		t.Fatalf("not destroyed: %+v", pr)
	}
	var cert struct {
		Certificate struct {
			Destroyed map[string]int
		}
		SHA256 string
	}
	e.admin("GET", base+"/destruction-certificate", nil, &cert)
	if cert.Certificate.Destroyed["submissions"] != 1 || cert.Certificate.Destroyed["device tokens"] != 1 || cert.Certificate.Destroyed["form media files"] != 2 {
		t.Fatalf("certificate: %+v", cert)
	}
	if hits := e.scanFor("Amina"); len(hits) > 0 {
		t.Fatalf("a name survived destruction in %v", hits)
	}
	holds := 0
	for _, ev := range e.audit("projectId=" + fmt.Sprint(pid)) {
		if strings.HasPrefix(ev.Action, "project.hold.") || ev.Action == "project.destroy" {
			holds++
		}
	}
	if holds != 3 {
		t.Fatalf("hold and destruction events: %d, want 3", holds)
	}
}
