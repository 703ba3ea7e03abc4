package server_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/formspec/xlsform/xlsxtest"
)

// The follow-up visits walk-through of the README: a registration form
// creates households, a follow-up form reads them as households.csv and
// updates them, from tablets that may be offline.

const registrationForm = `
| survey |
| | type            | name    | label             | save_to | purpose                      | sensitivity |
| | text            | hh_name | Head of household | hh_name | To find the household again  | level_2     |
| | select_one area | area    | Area              | area    | To plan visits by area       | level_1     |
| | integer         | size    | Household size    | size    | To plan rations              | public      |
| | text            | phone   | Phone             | phone   | To call before a visit       | level_3     |
| | acknowledge     | consent | I agree           |         | Consent to keep the record   | public      |
| choices |
| | list_name | name  | label |
| | area      | north | North |
| | area      | south | South |
| settings |
| | form_id         | version | consent |
| | hh_registration | 1       | consent |
| entities |
| | list_name  | label                                  |
| | households | concat(${hh_name}, ' (', ${area}, ')') |
`

const followUpForm = `
| survey |
| | type                                | name     | label    | choice_filter  | calculation                                        | save_to | purpose                 | sensitivity |
| | select_one area                     | area     | Area     |                |                                                    |         | Where the visit is      | level_1     |
| | select_one_from_file households.csv | hh       | Household| area = ${area} |                                                    |         | The household visited   | level_1     |
| | calculate                           | old_size |          |                | instance('households')/root/item[name=${hh}]/size |         | To compare sizes        | public      |
| | integer                             | size     | New size |                |                                                    | size    | To plan rations         | public      |
| | acknowledge                         | consent  | I agree  |                |                                                    |         | Consent to keep it      | public      |
| choices |
| | list_name | name  | label |
| | area      | north | North |
| | area      | south | South |
| settings |
| | form_id     | version | consent |
| | hh_followup | 1       | consent |
| entities |
| | list_name  | entity_id |
| | households | ${hh}     |
`

// nameCheckForm reads the head of household's name from the list.
const nameCheckForm = `
| survey |
| | type                                | name    | label     | calculation                                          | purpose             | sensitivity |
| | select_one_from_file households.csv | hh      | Household |                                                      | The household       | level_1     |
| | calculate                           | head    |           | instance('households')/root/item[name=${hh}]/hh_name | To greet the head   | level_2     |
| | acknowledge                         | consent | I agree   |                                                      | Consent to keep it  | public      |
| settings |
| | form_id      | version | consent |
| | hh_namecheck | 1       | consent |
`

func (e *env) publishMarkdown(pid int64, md string) {
	e.t.Helper()
	b, err := xlsxtest.FromMarkdown(md)
	if err != nil {
		e.t.Fatal(err)
	}
	e.publishXLSX(pid, b)
}

func registration(uuid, name, area, size, phone string) []byte {
	return []byte(fmt.Sprintf(`<?xml version="1.0"?>
<data xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms" xmlns:entities="http://www.opendatakit.org/xforms/entities" id="hh_registration" version="1">
<hh_name>%s</hh_name><area>%s</area><size>%s</size><phone>%s</phone><consent>OK</consent>
<meta><entity dataset="households" create="1" id="%s"><label>%s (%s)</label></entity><instanceID>uuid:reg-%s</instanceID></meta></data>`,
		name, area, size, phone, uuid, name, area, uuid))
}

// followUp is an update of a household; branch and trunk place an offline one.
func followUp(instance, uuid, area, size string, base int, trunk, branch string) []byte {
	return []byte(fmt.Sprintf(`<?xml version="1.0"?>
<data xmlns:orx="http://openrosa.org/xforms" id="hh_followup" version="1">
<area>%s</area><hh>%s</hh><old_size/><size>%s</size><consent>OK</consent>
<meta><entity dataset="households" update="1" baseVersion="%d" trunkVersion="%s" branchId="%s" id="%s"/><instanceID>uuid:%s</instanceID></meta></data>`,
		area, uuid, size, base, trunk, branch, uuid, instance))
}

const (
	hhNorth = "0b6f6a2e-3c1d-4d7e-9a1b-2c3d4e5f6a7b"
	hhSouth = "1c7a7b3f-4d2e-4e8f-8b2c-3d4e5f6a7b8c"
)

// listCSV fetches a form's manifest as Collect does and downloads the
// entity list in it, checked against the manifest's hash.
func listCSV(t *testing.T, c *collect.Client, formID string) ([][]string, []byte, collect.MediaFile) {
	t.Helper()
	ctx := context.Background()
	forms, err := c.FormList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range forms {
		if f.FormID != formID {
			continue
		}
		files, err := c.Manifest(ctx, f.ManifestURL)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range files {
			if m.Filename != "households.csv" {
				continue
			}
			b, err := c.Download(ctx, m.DownloadURL, m.Hash)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			return rows, b, m
		}
		t.Fatalf("the manifest of %s has no households.csv: %+v", formID, files)
	}
	t.Fatalf("%s is not in the form list", formID)
	return nil, nil, collect.MediaFile{}
}

func submit(t *testing.T, c *collect.Client, x []byte) {
	t.Helper()
	if _, err := c.Submit(context.Background(), x, nil); err != nil {
		t.Fatal(err)
	}
}

func TestEntitiesFollowUp(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	pid := pr.ID
	e.publishMarkdown(pid, registrationForm)
	e.publishMarkdown(pid, followUpForm)
	base := fmt.Sprintf("/v1/projects/%d/datasets", pid)

	// Publishing declared the list, each property with its purpose and tier.
	var list struct {
		Name                     string
		Properties               []struct{ Name, Purpose, Sensitivity string }
		LinkedForms, SourceForms []struct{ XMLFormID string }
	}
	e.admin("GET", base+"/households", nil, &list)
	var got []string
	for _, p := range list.Properties {
		got = append(got, p.Name+":"+p.Sensitivity)
		if p.Purpose == "" {
			t.Errorf("property %s has no purpose", p.Name)
		}
	}
	want := []string{"hh_name:level_2", "area:level_1", "size:public", "phone:level_3"}
	if !slices.Equal(got, want) {
		t.Fatalf("properties: %v, want %v", got, want)
	}
	if fmt.Sprint(list.SourceForms) != "[{hh_followup} {hh_registration}]" || fmt.Sprint(list.LinkedForms) != "[{hh_followup}]" {
		t.Fatalf("forms of the list: %+v", list)
	}

	// Two tablets: the north team's (cleared for level_1, filtered to its
	// area) and a public-cleared one.
	northID, northURL := e.appUser(pid, "North team")
	_, publicURL := e.appUser(pid, "Public tablet")
	e.admin("PUT", fmt.Sprintf("/v1/projects/%d/clearances/%d", pid, northID), map[string]string{"clearance": "level_1"}, nil)
	e.admin("PUT", fmt.Sprintf("%s/households/filters/%d", base, northID), map[string]any{"property": "area", "values": []string{"north"}}, nil)
	north, public := collect.New(northURL), collect.New(publicURL)
	if st := e.call("PUT", fmt.Sprintf("%s/households/filters/%d", base, 9999), e.token, map[string]any{"property": "area", "values": []string{"north"}}, nil); st != 404 {
		t.Fatalf("a filter for no one: %d", st)
	}
	// The office tablet is cleared for everything but has only the two forms.
	officeID, officeURL := e.appUser(pid, "Office tablet")
	e.admin("PUT", fmt.Sprintf("/v1/projects/%d/clearances/%d", pid, officeID), map[string]string{"clearance": "level_3"}, nil)
	office := collect.New(officeURL)

	submit(t, north, registration(hhNorth, "Amina Farah", "north", "4", "+252-61-NORTHPHONE"))
	submit(t, north, registration(hhSouth, "Khadar Ali", "south", "6", "+252-61-SOUTHPHONE"))

	var entities []struct {
		UUID           string
		CurrentVersion struct {
			Label   string
			Version int
		}
	}
	e.admin("GET", base+"/households/entities", nil, &entities)
	if len(entities) != 2 || entities[0].CurrentVersion.Label != "Amina Farah (north)" || entities[0].CurrentVersion.Version != 1 {
		t.Fatalf("entities: %+v", entities)
	}

	// What each tablet holds: only the columns its forms read (area for the
	// filter, size for a calculation), within its clearance; the label only
	// when cleared for it (it is made of a level_2 name); only its area.
	rows, raw, m := listCSV(t, north, "hh_followup")
	if want := [][]string{{"name", "label", "__version", "area", "size"}, {hhNorth, "", "1", "north", "4"}}; fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Fatalf("north tablet's list:\n%v\nwant\n%v", rows, want)
	}
	if m.Type != "entityList" || !strings.HasSuffix(m.IntegrityURL, fmt.Sprintf("/projects/%d/datasets/households/integrity", pid)) {
		t.Fatalf("manifest entry: %+v", m)
	}
	// A tablet holding an entity its filter now leaves out is told to drop it.
	if gone, err := north.Integrity(context.Background(), m.IntegrityURL, []string{hhNorth, hhSouth}); err != nil || !gone[hhSouth] || gone[hhNorth] {
		t.Fatalf("north tablet's integrity: %v %v", gone, err)
	}
	// Asked again with its ETag, the unchanged list is not sent again.
	req, _ := http.NewRequest("GET", m.DownloadURL, nil)
	req.Header.Set("If-None-Match", `"`+strings.TrimPrefix(m.Hash, "md5:")+`"`)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNotModified {
		t.Fatalf("a conditional request for an unchanged list: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	rowsPublic, rawPublic, _ := listCSV(t, public, "hh_followup")
	if want := [][]string{{"name", "label", "__version", "size"}, {hhNorth, "", "1", "4"}, {hhSouth, "", "1", "6"}}; fmt.Sprint(rowsPublic) != fmt.Sprint(want) {
		t.Fatalf("public tablet's list:\n%v\nwant\n%v", rowsPublic, want)
	}
	for _, b := range [][]byte{raw, rawPublic} {
		for _, secret := range []string{"PHONE", "Amina", "Khadar"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Fatalf("a tablet's list carries %q:\n%s", secret, b)
			}
		}
	}
	if bytes.Contains(rawPublic, []byte("north")) {
		t.Fatal("the public tablet's list carries the level_1 area")
	}
	// Cleared for level_2, the north team gets the labels too.
	e.admin("PUT", fmt.Sprintf("/v1/projects/%d/clearances/%d", pid, northID), map[string]string{"clearance": "level_2"}, nil)
	rows, _, m2 := listCSV(t, north, "hh_followup")
	if rows[1][1] != "Amina Farah (north)" || m2.Hash == m.Hash {
		t.Fatalf("level_2 tablet: %v (hash %s, before %s)", rows, m2.Hash, m.Hash)
	}

	// What travels follows the forms a device has: a third form that reads
	// the head of household's name, assigned to the north tablet only,
	// brings that column to it and to no one else.
	e.publishMarkdown(pid, nameCheckForm)
	e.admin("POST", fmt.Sprintf("/v1/projects/%d/forms/hh_namecheck/assignments/app-user/%d", pid, northID), nil, nil)
	rows, _, _ = listCSV(t, north, "hh_namecheck")
	if want := []string{"name", "label", "__version", "hh_name", "area", "size"}; !slices.Equal(rows[0], want) || rows[1][3] != "Amina Farah" {
		t.Fatalf("north tablet with the name check: %v", rows)
	}
	rows, raw, _ = listCSV(t, office, "hh_followup")
	if want := []string{"name", "label", "__version", "area", "size"}; !slices.Equal(rows[0], want) || len(rows) != 3 || bytes.Contains(raw, []byte("PHONE")) {
		t.Fatalf("office tablet (level_3, without the name check): %v", rows)
	}

	// The console's "What devices hold" says so, with names and counts only.
	resp := e.consoleGet(fmt.Sprintf("/projects/%d/devices", pid), e.token)
	page := readAll(resp)
	for _, want := range []string{"households.csv", "<code>hh_name</code>", "<code>area</code> is one of <code>north</code>", "labels withheld"} {
		if !strings.Contains(page, want) {
			t.Errorf("the devices page lacks %q", want)
		}
	}
	for _, secret := range []string{"Amina", "PHONE", "Khadar"} {
		if strings.Contains(page, secret) {
			t.Errorf("the devices page shows %q", secret)
		}
	}

	// Offline: the north tablet updates the household twice in one branch;
	// the second arrives first and waits for the first.
	submit(t, north, followUp("fu-2", hhNorth, "north", "6", 2, "1", "branch-a"))
	var one struct {
		Conflict       *string
		CurrentVersion struct {
			Version int
			Data    map[string]string
		}
	}
	e.admin("GET", base+"/households/entities/"+hhNorth, nil, &one)
	if one.CurrentVersion.Version != 1 {
		t.Fatalf("the held update was applied before its predecessor: %+v", one)
	}
	submit(t, north, followUp("fu-1", hhNorth, "north", "5", 1, "1", "branch-a"))
	e.admin("GET", base+"/households/entities/"+hhNorth, nil, &one)
	if one.CurrentVersion.Version != 3 || one.CurrentVersion.Data["size"] != "6" || one.Conflict != nil {
		t.Fatalf("after the branch: %+v", one)
	}
	// Meanwhile the public tablet, offline since version 1, sets another
	// size: a hard conflict, recorded as Central records it.
	submit(t, public, followUp("fu-3", hhNorth, "north", "9", 1, "", ""))
	e.admin("GET", base+"/households/entities/"+hhNorth, nil, &one)
	if one.Conflict == nil || *one.Conflict != "hard" || one.CurrentVersion.Data["size"] != "9" {
		t.Fatalf("conflict not recorded: %+v", one)
	}
	var versions []struct {
		Version               int
		BaseVersion           *int
		ConflictingProperties []string
		BranchID              *string
	}
	e.admin("GET", base+"/households/entities/"+hhNorth+"/versions", nil, &versions)
	if len(versions) != 4 || *versions[3].BaseVersion != 1 || !slices.Equal(versions[3].ConflictingProperties, []string{"size"}) ||
		versions[1].BranchID == nil || *versions[1].BranchID != "branch-a" {
		t.Fatalf("versions: %+v", versions)
	}
	// Central's diffs: what each version changed; and the entity's audit events.
	var diffs [][]struct {
		Old, New     *string
		PropertyName string
	}
	e.admin("GET", base+"/households/entities/"+hhNorth+"/diffs", nil, &diffs)
	if len(diffs) != 3 || len(diffs[0]) != 1 || diffs[0][0].PropertyName != "size" || *diffs[0][0].Old != "4" || *diffs[0][0].New != "5" || *diffs[2][0].New != "9" {
		t.Fatalf("diffs: %+v", diffs)
	}
	var audits []struct{ Action string }
	e.admin("GET", base+"/households/entities/"+hhNorth+"/audits", nil, &audits)
	actions := map[string]int{}
	for _, a := range audits {
		actions[a.Action]++
	}
	if actions["entity.create"] != 1 || actions["entity.update.version"] != 3 || actions["submission.backlog.hold"] != 1 {
		t.Fatalf("audits: %v", actions)
	}
	// A resend of a follow-up changes nothing.
	submit(t, public, followUp("fu-3", hhNorth, "north", "9", 1, "", ""))
	e.admin("GET", base+"/households/entities/"+hhNorth+"/versions", nil, &versions)
	if len(versions) != 4 {
		t.Fatalf("a resend made a version: %d", len(versions))
	}
	// Resolving the conflict over the API, as Central's ?resolve=true.
	e.admin("PATCH", base+"/households/entities/"+hhNorth+"?resolve=true&baseVersion=4", map[string]any{}, &one)
	if one.Conflict != nil {
		t.Fatalf("conflict not resolved: %+v", one)
	}

	// Erasing the registration erases its household: gone from the list
	// and from the tablets (integrity says deleted), and a resend of the
	// registration does not bring it back.
	e.admin("DELETE", fmt.Sprintf("/v1/projects/%d/forms/hh_registration/submissions/uuid:reg-%s", pid, hhSouth), nil, nil)
	if st := e.call("GET", base+"/households/entities/"+hhSouth, e.token, nil, nil); st != 404 {
		t.Fatalf("erased entity: status %d", st)
	}
	// The public tablet asks, as Collect does, which of the entities it
	// holds to drop: the erased one (an id the server never had is not
	// answered).
	_, _, pm := listCSV(t, public, "hh_followup")
	gone, err := public.Integrity(context.Background(), pm.IntegrityURL, []string{hhSouth, hhNorth, "00000000-0000-4000-8000-000000000000"})
	if err != nil || fmt.Sprint(gone) != fmt.Sprintf("map[%s:false %s:true]", hhNorth, hhSouth) {
		t.Fatalf("integrity: %v %v", gone, err)
	}
	submit(t, north, registration(hhSouth, "Khadar Ali", "south", "6", "+252-61-SOUTHPHONE"))
	rowsPublic, _, _ = listCSV(t, public, "hh_followup")
	if len(rowsPublic) != 2 {
		t.Fatalf("the erased household came back: %v", rowsPublic)
	}
}

// With approval required, a registration makes its entity when the
// submission is approved, not when it arrives; an update still applies
// when it arrives, as in Central.
func TestEntitiesOnApproval(t *testing.T) {
	e := newEnv(t)
	pid := e.emptyProject().ID
	e.publishMarkdown(pid, registrationForm)
	e.publishMarkdown(pid, followUpForm)
	base := fmt.Sprintf("/v1/projects/%d/datasets/households", pid)
	var l struct{ ApprovalRequired bool }
	e.admin("PATCH", base, map[string]bool{"approvalRequired": true}, &l)
	if !l.ApprovalRequired {
		t.Fatal("approval not set")
	}
	dev := e.device(pid, "Tablet")
	submit(t, dev, registration(hhNorth, "Amina Farah", "north", "4", "+252"))
	if st := e.call("GET", base+"/entities/"+hhNorth, e.token, nil, nil); st != 404 {
		t.Fatalf("an entity was made before approval: %d", st)
	}
	e.admin("PATCH", fmt.Sprintf("/v1/projects/%d/forms/hh_registration/submissions/uuid:reg-%s", pid, hhNorth), map[string]string{"reviewState": "approved"}, nil)
	if _, _, m := listCSV(t, dev, "hh_followup"); m.Type != "approvalEntityList" {
		t.Fatalf("the manifest entry of a list made on approval: %+v", m)
	}
	var one struct{ CurrentVersion struct{ Version int } }
	e.admin("GET", base+"/entities/"+hhNorth, nil, &one)
	submit(t, dev, followUp("fu-1", hhNorth, "north", "5", 1, "", ""))
	e.admin("GET", base+"/entities/"+hhNorth, nil, &one)
	if one.CurrentVersion.Version != 2 {
		t.Fatalf("the update waited for an approval: %+v", one)
	}
	// Approving again changes nothing.
	e.admin("PATCH", fmt.Sprintf("/v1/projects/%d/forms/hh_registration/submissions/uuid:reg-%s", pid, hhNorth), map[string]string{"reviewState": "approved"}, nil)
	e.admin("GET", base+"/entities/"+hhNorth, nil, &one)
	if one.CurrentVersion.Version != 2 {
		t.Fatalf("a second approval changed the entity: %+v", one)
	}
}

const subjectRegistration = `
| survey |
| | type    | name  | label | save_to | purpose                     | sensitivity |
| | text    | hh_id | HH ID | hh_id   | To find the household again | level_2     |
| | integer | size  | Size  | size    | To plan rations             | public      |
| settings |
| | form_id | version | legal_basis     | subject_id |
| | reg_sub | 1       | public_interest | hh_id      |
| entities |
| | list_name  | label    |
| | households | ${hh_id} |
`

const subjectFollowUp = `
| survey |
| | type                                | name | label | calculation                                       | purpose   | sensitivity |
| | select_one_from_file households.csv | hh   | HH    |                                                   | Which one | level_1     |
| | calculate                           | old  |       | instance('households')/root/item[name=${hh}]/size | Compare   | public      |
| settings |
| | form_id | version | legal_basis     |
| | fu_sub  | 1       | public_interest |
`

// A data subject's requests reach their entities: a correction of the
// registration changes the entity, access lists it, an objection stops
// it going to devices (until lifted), an erasure removes it.
func TestEntitiesSubjectRequests(t *testing.T) {
	e := newEnv(t)
	pid := e.emptyProject().ID
	e.publishMarkdown(pid, subjectRegistration)
	e.publishMarkdown(pid, subjectFollowUp)
	dev := e.device(pid, "Tablet")
	base := fmt.Sprintf("/v1/projects/%d", pid)
	uuid := "2d8b8c4a-5e3f-4f9a-9c3d-4e5f6a7b8c9d"
	submit(t, dev, []byte(fmt.Sprintf(`<data id="reg_sub" version="1"><hh_id>HH-1</hh_id><size>4</size>`+
		`<meta><instanceID>uuid:sub-1</instanceID><entity dataset="households" create="1" id="%s"><label>HH-1</label></entity></meta></data>`, uuid)))
	submit(t, dev, []byte(`<data id="reg_sub" version="1"><hh_id>HH-2</hh_id><size>2</size>`+
		`<meta><instanceID>uuid:sub-2</instanceID><entity dataset="households" create="1" id="3e9c9d5b-6f4a-4a0b-8d4e-5f6a7b8c9d0e"><label>HH-2</label></entity></meta></data>`))

	// A correction of the size reaches the entity.
	e.admin("POST", base+"/forms/reg_sub/submissions/uuid:sub-1/corrections", map[string]any{"values": map[string]string{"/data/size": "7"}, "reason": "the person asked"}, nil)
	var one struct {
		CurrentVersion struct {
			Version int
			Data    map[string]string
		}
	}
	e.admin("GET", base+"/datasets/households/entities/"+uuid, nil, &one)
	if one.CurrentVersion.Version != 2 || one.CurrentVersion.Data["size"] != "7" {
		t.Fatalf("after the correction: %+v", one)
	}
	// Access lists the entity.
	var rep struct {
		Entities []struct {
			EntityList string
			UUID       string
			Versions   []struct{ Version int }
		}
	}
	e.admin("GET", base+"/subjects/HH-1", nil, &rep)
	if len(rep.Entities) != 1 || rep.Entities[0].UUID != uuid || len(rep.Entities[0].Versions) != 2 {
		t.Fatalf("access: %+v", rep)
	}
	// An objection: the entity no longer goes to devices; lifted, it does.
	rows, _, _ := listCSV(t, dev, "fu_sub")
	if len(rows) != 3 {
		t.Fatalf("before the objection: %v", rows)
	}
	e.admin("POST", base+"/subjects/HH-1/objection", nil, nil)
	rows, _, _ = listCSV(t, dev, "fu_sub")
	if len(rows) != 2 || rows[1][0] == uuid {
		t.Fatalf("after the objection: %v", rows)
	}
	e.admin("DELETE", base+"/subjects/HH-1/objection", nil, nil)
	if rows, _, _ = listCSV(t, dev, "fu_sub"); len(rows) != 3 {
		t.Fatalf("after the objection was lifted: %v", rows)
	}
	// Erasure: gone, counted.
	e.admin("DELETE", base+"/subjects/HH-1", nil, nil)
	if st := e.call("GET", base+"/datasets/households/entities/"+uuid, e.token, nil, nil); st != 404 {
		t.Fatalf("after the erasure: %d", st)
	}
	var erasures []struct{ Submissions, Entities int }
	e.admin("GET", base+"/subject-erasures", nil, &erasures)
	if len(erasures) != 1 || erasures[0].Entities != 1 {
		t.Fatalf("erasure records: %+v", erasures)
	}
	// The tablet resends the registration: it is not kept, and the
	// household does not come back.
	res, err := dev.Submit(context.Background(), []byte(fmt.Sprintf(`<data id="reg_sub" version="1"><hh_id>HH-1</hh_id><size>4</size>`+
		`<meta><instanceID>uuid:sub-1</instanceID><entity dataset="households" create="1" id="%s"><label>HH-1</label></entity></meta></data>`, uuid)), nil)
	if err != nil || !strings.Contains(res.Message, "erased") {
		t.Fatalf("the resend: %+v %v", res, err)
	}
	if st := e.call("GET", base+"/datasets/households/entities/"+uuid, e.token, nil, nil); st != 404 {
		t.Fatalf("after the resend: %d", st)
	}
}

// entities.csv is opened in spreadsheets: a value they would run as a
// formula is made text there, while the list a device gets keeps it as
// it was entered.
func TestEntitiesCSVFormulas(t *testing.T) {
	e := newEnv(t)
	pid := e.emptyProject().ID
	e.publishMarkdown(pid, registrationForm)
	e.publishMarkdown(pid, followUpForm)
	dev := e.device(pid, "Tablet")
	base := fmt.Sprintf("/v1/projects/%d/datasets/households", pid)
	e.admin("POST", base+"/entities", map[string]any{"uuid": hhNorth, "label": `=HYPERLINK("http://x","y")`, "data": map[string]string{"size": "-3", "area": "@north"}}, nil)
	resp := e.request("GET", base+"/entities.csv", e.token, "", nil)
	got := readAll(resp)
	if !strings.Contains(got, `"'=HYPERLINK(""http://x"",""y"")"`) || !strings.Contains(got, ",'@north,") || !strings.Contains(got, ",-3,") {
		t.Fatalf("entities.csv: %s", got)
	}
	e.admin("PUT", fmt.Sprintf("/v1/projects/%d/clearances/%d", pid, appUserID(t, e, pid)), map[string]string{"clearance": "level_3"}, nil)
	rows, _, _ := listCSV(t, dev, "hh_followup")
	if rows[1][1] != `=HYPERLINK("http://x","y")` || rows[1][3] != "@north" {
		t.Fatalf("the device's list: %v", rows)
	}
}

// appUserID is the id of a project's only app user.
func appUserID(t *testing.T, e *env, pid int64) int64 {
	t.Helper()
	var aus []struct{ ID int64 }
	e.admin("GET", fmt.Sprintf("/v1/projects/%d/app-users", pid), nil, &aus)
	if len(aus) != 1 {
		t.Fatalf("app users: %+v", aus)
	}
	return aus[0].ID
}
