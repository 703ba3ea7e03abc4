package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/formspec/xlsform/xlsxtest"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/pgtest"
)

// consentForm is an XLSForm with a consent question in two languages,
// device start and end times, a name and a photo. purpose is the name
// question's purpose cell.
func consentForm(t *testing.T, purpose string) []byte {
	t.Helper()
	b, err := xlsxtest.FromMarkdown(`
| survey   |               |          |                                   |                                  |                    |             |
|          | type          | name     | label::English (en)               | label::Kiswahili (sw)            | purpose            | sensitivity |
|          | start         | start    |                                   |                                  |                    |             |
|          | end           | end      |                                   |                                  |                    |             |
|          | select_one yn | consent  | We will ask about your household. Do you agree? | Tutauliza kuhusu kaya yako. Unakubali? | Consent evidence | public |
|          | text          | hh_name  | Name                              | Jina                             | ` + purpose + ` | level_3 |
|          | image         | photo    | Photo of the shelter              | Picha ya makazi                  | Evidence of damage | level_2     |
| choices  |               |          |                                   |                                  |                    |             |
|          | list_name     | name     | label::English (en)               | label::Kiswahili (sw)            |                    |             |
|          | yn            | yes      | Yes                               | Ndiyo                            |                    |             |
|          | yn            | no       | No                                | Hapana                           |                    |             |
| settings |               |          |                                   |                                  |                    |             |
|          | form_id       | version  | consent                           |                                  |                    |             |
|          | consented     | 1        | consent                           |                                  |                    |             |
`)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func consentInstance(id, consent, name, photo string) []byte {
	return []byte(fmt.Sprintf(`<data xmlns:orx="http://openrosa.org/xforms" id="consented" version="1"><start>2026-11-20T09:00:00.000+03:00</start><end>2026-11-20T09:20:00.000+03:00</end><consent>%s</consent><hh_name>%s</hh_name><photo>%s</photo><meta><instanceID>%s</instanceID></meta></data>`,
		consent, name, photo, id))
}

// A form with a field that does not say why it is collected is refused at
// publishing, naming the field and its row, and nothing is stored.
func TestPublishingRefusesUnmappedFields(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	base := fmt.Sprintf("/v1/projects/%d/forms", pr.ID)

	resp := e.request("POST", base+"?publish=true", e.token, xlsxType, bytes.NewReader(consentForm(t, "")))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "/data/hh_name (survey row 5): has no purpose") {
		t.Fatalf("publishing an unmapped field: %d %s", resp.StatusCode, body)
	}
	var forms []json.RawMessage
	e.admin("GET", base, nil, &forms)
	if len(forms) != 0 {
		t.Fatalf("a refused form was stored: %d forms", len(forms))
	}

	// As a draft it may be stored (drafts are where forms get fixed), but
	// publishing the draft is refused and leaves it a draft.
	resp = e.request("POST", base, e.token, xlsxType, bytes.NewReader(consentForm(t, "")))
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("draft upload: %d", resp.StatusCode)
	}
	var refusal struct {
		Message string
		Details struct {
			Problems []struct{ Path, Message string }
		}
	}
	if st := e.call("POST", base+"/consented/draft/publish", e.token, nil, &refusal); st != 400 || len(refusal.Details.Problems) != 1 ||
		refusal.Details.Problems[0].Path != "/data/hh_name" {
		t.Fatalf("publishing the draft: %d %+v", st, refusal)
	}
	var f struct{ PublishedAt *time.Time }
	e.admin("GET", base+"/consented/draft", nil, &f)

	// An XForm without a consent question or a legal basis is refused too.
	xf := bytes.Replace(householdXML(t), []byte(`haven:legal-basis="public_interest"`), nil, 1)
	var r2 struct{ Message string }
	if st := e.call("POST", base+"?publish=true", e.token, xf, &r2); st != 400 || !strings.Contains(r2.Message, "no consent question and declares no other legal basis") {
		t.Fatalf("no legal basis: %d %q", st, r2.Message)
	}
}

// The schema view lists every field with its purpose and tier; metadata
// are mapped by Haven, notes left out of the rule.
func TestFieldsView(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	base := fmt.Sprintf("/v1/projects/%d/forms", pr.ID)
	e.publishXLSX(pr.ID, consentForm(t, "Call back"))
	var fields []struct {
		Path, Kind, Purpose, Sensitivity, EffectiveSensitivity string
		Consent                                                bool
	}
	e.admin("GET", base+"/consented/fields", nil, &fields)
	got := map[string]string{}
	for _, f := range fields {
		got[f.Path] = f.Kind + " " + f.Sensitivity + " " + f.Purpose
		if f.Consent != (f.Path == "/data/consent") {
			t.Errorf("consent flag on %s: %v", f.Path, f.Consent)
		}
	}
	for path, want := range map[string]string{
		"/data/hh_name":         "data level_3 Call back",
		"/data/photo":           "data level_2 Evidence of damage",
		"/data/meta/instanceID": "metadata public Identifies the submission (protocol metadata).",
	} {
		if got[path] != want {
			t.Errorf("%s: got %q, want %q", path, got[path], want)
		}
	}
	if !strings.HasPrefix(got["/data/start"], "metadata level_1 ") {
		t.Errorf("start: %q", got["/data/start"])
	}
}

// A field left undecided (level_0) is handled as level_3 and flags its form
// as classification overdue 24 hours after it was published undecided.
func TestClassificationOverdue(t *testing.T) {
	e := newEnv(t)
	now := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	e.st.DB.Now = func() time.Time { return now }
	pr := e.emptyProject()
	base := fmt.Sprintf("/v1/projects/%d/forms", pr.ID)
	undecided := bytes.Replace(householdXML(t), []byte(`haven:purpose="Size the ration" haven:sensitivity="level_1"`),
		[]byte(`haven:purpose="Size the ration" haven:sensitivity="level_0"`), 1)
	e.admin("POST", base+"?publish=true", undecided, nil)

	overdue := func() []string {
		var cs []struct {
			XMLFormID string
			Undecided []string
			Overdue   bool
		}
		e.admin("GET", fmt.Sprintf("/v1/projects/%d/classification?overdue=true", pr.ID), nil, &cs)
		var out []string
		for _, c := range cs {
			out = append(out, c.XMLFormID+":"+strings.Join(c.Undecided, ","))
		}
		return out
	}
	if o := overdue(); len(o) != 0 {
		t.Fatalf("overdue at once: %v", o)
	}
	var fields []struct{ Path, EffectiveSensitivity string }
	e.admin("GET", base+"/household/fields", nil, &fields)
	for _, f := range fields {
		if f.Path == "/household/members" && f.EffectiveSensitivity != "level_3" {
			t.Errorf("an undecided field is handled as %s", f.EffectiveSensitivity)
		}
	}
	now = now.Add(23 * time.Hour)
	e.token = e.login(adminEmail, adminPassword) // access tokens live 15 minutes
	if o := overdue(); len(o) != 0 {
		t.Fatalf("overdue after 23 hours: %v", o)
	}
	// A new version that still leaves it undecided does not restart the clock.
	e.admin("POST", base+"/household/draft", undecided, nil)
	e.admin("POST", base+"/household/draft/publish?version=2", nil, nil)
	now = now.Add(90 * time.Minute)
	e.token = e.login(adminEmail, adminPassword)
	if o := overdue(); len(o) != 1 || o[0] != "household:/household/members" {
		t.Fatalf("overdue after 24.5 hours: %v", o)
	}
	// Classifying it clears the flag.
	e.admin("POST", base+"/household/draft", householdXML(t), nil)
	e.admin("POST", base+"/household/draft/publish?version=3", nil, nil)
	if o := overdue(); len(o) != 0 {
		t.Fatalf("still overdue once classified: %v", o)
	}
}

// Consent given: the submission is stored with its consent record. Refused
// or missing: 201 so the device clears it, nothing of it written anywhere,
// one more in the day's anonymous tally. Withdrawn: erased, a record without
// personal data kept, and a resend is not stored again.
func TestConsent(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	base := fmt.Sprintf("/v1/projects/%d/forms", pr.ID)
	e.publishXLSX(pr.ID, consentForm(t, "Call back"))
	dev := e.device(pr.ID, "Tablet")
	dev.DeviceID = "collect:tablet-7"
	ctx := context.Background()
	photo := func(marker string) []collect.File {
		return []collect.File{collect.BytesFile("p.jpg", bytes.Repeat([]byte(marker), 4000))}
	}

	res, err := dev.Submit(ctx, consentInstance("uuid:c1", "yes", "Amina", "p.jpg"), photo("GIVEN-PHOTO-"))
	if err != nil || res.Status != 201 {
		t.Fatalf("consent given: %+v %v", res, err)
	}
	var sub struct {
		Consent struct {
			Outcome, LegalBasis, Field, StatementVersion, Language, DeviceID string
			DeviceStart, DeviceEnd                                           *time.Time
			ReceivedAt                                                       time.Time
			DeviceUserID                                                     int64
		}
	}
	e.admin("GET", base+"/consented/submissions/uuid:c1", nil, &sub)
	c := sub.Consent
	if c.Outcome != "given" || c.LegalBasis != "consent" || c.Field != "/data/consent" || len(c.StatementVersion) != 64 ||
		c.DeviceStart == nil || !c.DeviceStart.Equal(time.Date(2026, 11, 20, 6, 0, 0, 0, time.UTC)) || c.DeviceEnd == nil ||
		c.ReceivedAt.IsZero() || c.DeviceUserID == 0 || c.DeviceID != "collect:tablet-7" {
		t.Fatalf("consent record: %+v", c)
	}
	rows, files := e.blobRows(), len(e.blobFiles())

	for i, answer := range []string{"no", ""} {
		marker := fmt.Sprintf("REFUSED-%d-MARKER", i)
		res, err := dev.Submit(ctx, consentInstance(fmt.Sprintf("uuid:r%d", i), answer, marker, "p.jpg"), photo(marker))
		if err != nil || res.Status != 201 || !strings.Contains(res.Message, "nothing of this form was kept") {
			t.Fatalf("consent %q: %+v %v", answer, res, err)
		}
		if hits := e.scanFor(marker); len(hits) > 0 {
			t.Fatalf("consent %q: the marker is on disk in %v", answer, hits)
		}
	}
	if e.blobRows() != rows || len(e.blobFiles()) != files {
		t.Fatalf("refused submissions left objects: %d rows (was %d), %d files (was %d)", e.blobRows(), rows, len(e.blobFiles()), files)
	}
	var list []json.RawMessage
	e.admin("GET", base+"/consented/submissions", nil, &list)
	if len(list) != 1 {
		t.Fatalf("%d submissions stored, want 1", len(list))
	}
	var tally struct {
		NotKeptByDay map[string]int
		Withdrawals  []map[string]any
	}
	e.admin("GET", base+"/consented/consent-refusals", nil, &tally)
	if total := sumDays(tally.NotKeptByDay); total != 2 || len(tally.Withdrawals) != 0 {
		t.Fatalf("tally: %+v", tally)
	}

	// Withdrawal.
	e.admin("POST", base+"/consented/submissions/uuid:c1/withdraw-consent", nil, nil)
	if st := e.call("GET", base+"/consented/submissions/uuid:c1", e.token, nil, nil); st != 404 {
		t.Fatalf("a withdrawn submission is still readable: %d", st)
	}
	if e.blobRows() != rows-1 {
		t.Fatalf("the withdrawn submission's photo is still recorded: %d rows, want %d", e.blobRows(), rows-1)
	}
	e.admin("GET", base+"/consented/consent-refusals", nil, &tally)
	if len(tally.Withdrawals) != 1 {
		t.Fatalf("withdrawals: %+v", tally.Withdrawals)
	}
	for k := range tally.Withdrawals[0] {
		if k != "submittedOn" && k != "withdrawnAt" && k != "recordedBy" {
			t.Errorf("the withdrawal record holds %q", k)
		}
	}
	// The tablet still had it in its outbox: the resend is not stored.
	res, err = dev.Submit(ctx, consentInstance("uuid:c1", "yes", "Amina", "p.jpg"), photo("GIVEN-PHOTO-"))
	if err != nil || res.Status != 201 || !strings.Contains(res.Message, "withdrawn") {
		t.Fatalf("resend after withdrawal: %+v %v", res, err)
	}
	e.admin("GET", base+"/consented/submissions", nil, &list)
	if len(list) != 0 || e.blobRows() != rows-1 {
		t.Fatalf("a withdrawn submission came back: %d submissions, %d blob rows", len(list), e.blobRows())
	}
}

func sumDays(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

type auditEvent struct {
	ID             int64
	ActorID        int64
	Action, Object string
	Address        string
	Outcome        string
	Details        map[string]any
}

func (e *env) audit(query string) []auditEvent {
	e.t.Helper()
	var evs []auditEvent
	e.admin("GET", "/v1/audit?"+query, nil, &evs)
	return evs
}

// Every read of collected data and every write is an audit event, allowed
// or refused; the listing is itself audited; the chain verifies, and
// tampering with one row is detected at that row.
func TestAuditTrail(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	res, err := dev.Submit(context.Background(), instance("uuid:a1", "Amina", "p.jpg"), []collect.File{collect.BytesFile("p.jpg", []byte("jpeg"))})
	if err != nil || res.Status != 201 {
		t.Fatalf("submit: %+v %v", res, err)
	}
	base := fmt.Sprintf("/v1/projects/%d/forms/household/submissions", pid)
	reads := map[string]string{
		base:                                "submission.list",
		base + "/uuid:a1":                   "submission.read",
		base + "/uuid:a1.xml":               "submission.read",
		base + "/uuid:a1/versions":          "submission.versions",
		base + "/uuid:a1/attachments":       "submission.attachments",
		base + "/uuid:a1/attachments/p.jpg": "attachment.download",
	}
	for path := range reads {
		resp := e.request("GET", path, e.token, "", nil)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
	}
	// A data collector may not read submissions: refused, and audited.
	e.collector(pid, "c@example.org", "collector password 1")
	ctok := e.login("c@example.org", "collector password 1")
	resp := e.request("GET", base+"/uuid:a1", ctok, "", nil)
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("collector read: %d", resp.StatusCode)
	}

	events := e.audit("limit=1000")
	seen := map[string]int{}
	for _, ev := range events {
		seen[ev.Action+" "+ev.Object+" "+ev.Outcome]++
		if ev.Address == "" {
			t.Errorf("event %d has no address", ev.ID)
		}
		if ev.ActorID == 0 {
			t.Errorf("event %d (%s) names no actor", ev.ID, ev.Action)
		}
	}
	obj := fmt.Sprintf("project/%d/form/household/submission/uuid:a1", pid)
	for _, want := range []string{
		fmt.Sprintf("submission.list project/%d/form/household ok", pid),
		"submission.read " + obj + " ok",
		"submission.versions " + obj + " ok",
		"submission.attachments " + obj + " ok",
		"attachment.download " + obj + "/file/p.jpg ok",
		"submission.create " + obj + " ok",
		fmt.Sprintf("form.publish project/%d/form/household ok", pid),
		"submission.read " + obj + " forbidden",
	} {
		if seen[want] == 0 {
			t.Errorf("no audit event %q", want)
		}
	}
	if seen["submission.read "+obj+" ok"] != 2 {
		t.Errorf("JSON and XML reads: %d events", seen["submission.read "+obj+" ok"])
	}
	// Field values never reach the trail.
	raw, _ := json.Marshal(events)
	if bytes.Contains(raw, []byte("Amina")) {
		t.Error("a field value is in the audit trail")
	}
	// Listing the trail is itself audited, with its filter.
	e.audit("action=submission.read")
	if l := e.audit("action=audit.list&limit=5"); len(l) == 0 || l[0].Details["filter"] != "action=submission.read" {
		t.Errorf("audit listing not audited: %+v", l)
	}

	var v storage.Verification
	e.admin("GET", "/v1/audit/verify", nil, &v)
	if !v.OK || v.Events < 10 {
		t.Fatalf("verify: %+v", v)
	}

	// The database refuses changes to the trail...
	ctx := context.Background()
	err = e.st.DB.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`UPDATE audits SET outcome = 'ok' WHERE action = 'submission.read' AND outcome = 'forbidden'`)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("updating an audit row: %v", err)
	}
	// ...and someone who gets around that (raw access to the file) is found out.
	var target int64
	e.st.DB.QueryRow(ctx, `SELECT id FROM audits WHERE action = 'submission.read' AND outcome = 'forbidden'`).Scan(&target)
	err = e.st.DB.Write(ctx, func(tx *storage.Tx) error {
		drop := `DROP TRIGGER audits_no_update`
		if pgtest.Backend() == "postgres" {
			drop += ` ON audits`
		}
		if _, err := tx.Exec(drop); err != nil {
			return err
		}
		_, err := tx.Exec(`UPDATE audits SET outcome = 'ok' WHERE id = ?`, target)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	e.admin("GET", "/v1/audit/verify", nil, &v)
	if v.OK || v.Broken != target {
		t.Fatalf("tampering with event %d: %+v", target, v)
	}
}
