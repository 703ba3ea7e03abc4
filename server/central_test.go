package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The exchanges of pyodk 1.3, the official Python client of ODK Central, as
// it sends them (getodk/pyodk, pyodk/_endpoints): paths quoted with
// urllib's quote(safe="*'()"), a bearer token kept for the whole script,
// flags as Python writes them ("True"), bodies and headers as it builds
// them; and the keys its models require of each answer. Each public method
// of pyodk has its exchange here, in the order a script would call them.

// pyQuote quotes a path segment as pyodk's URL formatter does.
func pyQuote(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.-~*'()", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// pyodk is a client that speaks as pyodk does.
type pyodk struct {
	t     *testing.T
	base  string
	token string
}

func (py *pyodk) do(method, path string, query url.Values, header map[string]string, body io.Reader) (int, []byte) {
	py.t.Helper()
	u := py.base + "/v1/" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		py.t.Fatal(err)
	}
	req.Header.Set("User-Agent", "pyodk v1.3.0")
	if py.token != "" {
		req.Header.Set("Authorization", "Bearer "+py.token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		py.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// ok sends a request that must succeed (raise_for_status) and decodes it.
func (py *pyodk) ok(method, path string, query url.Values, header map[string]string, body io.Reader, out any) {
	py.t.Helper()
	st, b := py.do(method, path, query, header, body)
	if st >= 400 {
		py.t.Fatalf("%s %s: %d %s", method, path, st, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			py.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

// model checks that an answer has every key a pyodk model requires, and
// that its times parse as pydantic parses them.
func (py *pyodk) model(what string, m map[string]any, keys ...string) {
	py.t.Helper()
	for _, k := range keys {
		v, ok := m[k]
		if !ok {
			py.t.Errorf("%s lacks %q, which pyodk requires: %v", what, k, m)
			continue
		}
		if strings.HasSuffix(k, "At") && v != nil {
			s, _ := v.(string)
			if _, err := time.Parse(time.RFC3339, s); err != nil {
				py.t.Errorf("%s: %s %v is not an ISO time", what, k, v)
			}
		}
	}
}

var (
	projectKeys    = []string{"id", "name", "createdAt"}
	formKeys       = []string{"projectId", "xmlFormId", "version", "hash", "state", "createdAt", "name", "enketoId", "keyId", "updatedAt", "publishedAt"}
	submissionKeys = []string{"instanceId", "submitterId", "createdAt"}
	appUserKeys    = []string{"projectId", "id", "displayName", "createdAt", "type", "token", "updatedAt", "deletedAt"}
	commentKeys    = []string{"body", "actorId", "createdAt"}
	attachmentKeys = []string{"name", "exists"}
	mediaKeys      = []string{"name", "type", "hash", "exists", "blobExists", "datasetExists", "updatedAt"}
	// pyodk's EntityList, Entity and CurrentVersion models (userAgent is a
	// required string there).
	entityListKeys    = []string{"name", "projectId", "createdAt", "approvalRequired"}
	entityKeys        = []string{"uuid", "creatorId", "createdAt", "currentVersion"}
	entityVersionKeys = []string{"label", "current", "createdAt", "creatorId", "userAgent", "version"}
)

func TestPyodkExchanges(t *testing.T) {
	e := newEnv(t)
	py := &pyodk{t: t, base: e.srv.URL}

	// Auth: a new session, then verify_token with /users/current.
	var session map[string]any
	py.ok("POST", "sessions", nil, map[string]string{"Content-Type": "application/json"},
		strings.NewReader(fmt.Sprintf(`{"email": %q, "password": %q}`, adminEmail, adminPassword)), &session)
	py.token, _ = session["token"].(string)
	py.ok("GET", "users/current", nil, map[string]string{"Content-Type": "application/json"}, nil, nil)

	// A project (pyodk creates them with client.post).
	var project map[string]any
	py.ok("POST", "projects", nil, map[string]string{"Content-Type": "application/json"}, strings.NewReader(`{"name": "pyodk"}`), &project)
	pid := int(project["id"].(float64))
	var projects []map[string]any
	py.ok("GET", "projects", nil, nil, nil, &projects)
	py.model("projects.list", projects[0], projectKeys...)
	py.ok("GET", fmt.Sprintf("projects/%d", pid), nil, nil, nil, &project)
	py.model("projects.get", project, projectKeys...)

	// forms.create: a draft (publish=False, ignoreWarnings=True, the form id
	// fallback quoted), its attachments, then the publish.
	formID := "2021-09-12 21:17:36.601000" // a real form's id: an Excel date
	xform := strings.Replace(string(householdXML(t)), `id="household"`, `id="`+formID+`"`, 1)
	var form map[string]any
	py.ok("POST", fmt.Sprintf("projects/%d/forms", pid), url.Values{"ignoreWarnings": {"True"}, "publish": {"False"}},
		map[string]string{"Content-Type": "application/xml", "X-XlsForm-FormId-Fallback": pyQuote(formID)}, strings.NewReader(xform), &form)
	py.model("forms.create", form, formKeys...)
	fp := fmt.Sprintf("projects/%d/forms/%s", pid, pyQuote(formID))
	for name, content := range map[string][]byte{"prices.csv": pricesCSV, "shelter.png": shelterPNG} {
		var up map[string]any
		py.ok("POST", fp+"/draft/attachments/"+pyQuote(name), nil, map[string]string{"Content-Type": "application/octet-stream", "Transfer-Encoding": "chunked"},
			bytes.NewReader(content), &up)
		if up["success"] != true {
			t.Fatalf("attachment upload: %v", up)
		}
	}
	var published map[string]any
	py.ok("POST", fp+"/draft/publish", nil, nil, nil, &published)
	if published["success"] != true {
		t.Fatalf("publish answers %v, pyodk reads data[\"success\"]", published)
	}
	var forms []map[string]any
	py.ok("GET", fmt.Sprintf("projects/%d/forms", pid), nil, nil, nil, &forms)
	py.model("forms.list", forms[0], formKeys...)
	py.ok("GET", fp, nil, nil, nil, &form)
	py.model("forms.get", form, formKeys...)
	if form["xmlFormId"] != formID || form["version"] != "2026110101" {
		t.Fatalf("forms.get: %v", form)
	}
	if st, b := py.do("GET", fp+".xml", nil, nil, nil); st != 200 || !strings.Contains(string(b), formID) {
		t.Fatalf("forms.get_xml: %d", st)
	}
	var media []map[string]any
	py.ok("GET", fp+"/attachments", nil, nil, nil, &media)
	py.model("form attachments", media[0], mediaKeys...)

	// forms.update with attachments only: a draft from the published
	// version, the files, a publish with a version from version_updater.
	py.ok("POST", fp+"/draft", nil, nil, nil, nil)
	py.ok("POST", fp+"/draft/attachments/prices.csv", nil, map[string]string{"Content-Type": "text/csv"}, strings.NewReader("district,price\nnorth,11\n"), nil)
	py.ok("POST", fp+"/draft/publish", url.Values{"version": {"2026110101_v2"}}, nil, nil, nil)
	py.ok("GET", fp, nil, nil, nil, &form)
	if form["version"] != "2026110101_v2" {
		t.Fatalf("forms.update: version %v", form["version"])
	}

	// projects.create_app_users: each app user, then each form assigned (role 2).
	var au map[string]any
	py.ok("POST", fmt.Sprintf("projects/%d/app-users", pid), nil, nil, strings.NewReader(`{"displayName": "Tablet A"}`), &au)
	py.model("project_app_users.create", au, appUserKeys...)
	var assigned map[string]any
	py.ok("POST", fmt.Sprintf("%s/assignments/2/%d", fp, int(au["id"].(float64))), nil, nil, nil, &assigned)
	if assigned["success"] != true {
		t.Fatalf("form_assignments.assign: %v", assigned)
	}
	var aus []map[string]any
	py.ok("GET", fmt.Sprintf("projects/%d/app-users", pid), nil, nil, nil, &aus)
	py.model("project_app_users.list", aus[0], appUserKeys...)

	// submissions.create: the XML (?deviceID), then each attachment, then
	// the attachment list.
	instance := `<data id="` + formID + `" version="2026110101_v2"><district>north</district><head_name>Ann</head_name><members>3</members>` +
		`<location>1.5 30.2 1200 5</location><shelter><roof>tarp</roof><photo>p.jpg</photo></shelter>` +
		`<member><age>30</age><sex>f</sex></member><member><age>4</age><sex>m</sex></member>` +
		`<meta><instanceID>uuid:py-1</instanceID></meta></data>`
	instance = strings.Replace(strings.Replace(instance, "<data ", "<household ", 1), "</data>", "</household>", 1)
	var sub map[string]any
	py.ok("POST", fp+"/submissions", url.Values{"deviceID": {"pyodk-test"}}, map[string]string{"Content-Type": "application/xml"}, strings.NewReader(instance), &sub)
	py.model("submissions.create", sub, submissionKeys...)
	sp := fp + "/submissions/" + pyQuote("uuid:py-1")
	py.ok("POST", sp+"/attachments/p.jpg", nil, map[string]string{"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"}, strings.NewReader("jpeg"), nil)
	var atts []map[string]any
	py.ok("GET", sp+"/attachments", nil, nil, nil, &atts)
	py.model("submission_attachments.list", atts[0], attachmentKeys...)
	if atts[0]["exists"] != true {
		t.Fatalf("the uploaded file is missing: %v", atts)
	}

	var subs []map[string]any
	py.ok("GET", fp+"/submissions", nil, nil, nil, &subs)
	py.model("submissions.list", subs[0], submissionKeys...)
	py.ok("GET", sp, nil, nil, nil, &sub)
	py.model("submissions.get", sub, submissionKeys...)

	// submissions.review: PATCH the review state, then a comment.
	py.ok("PATCH", sp, nil, nil, strings.NewReader(`{"reviewState": "approved"}`), &sub)
	if sub["reviewState"] != "approved" {
		t.Fatalf("review: %v", sub)
	}
	var cm map[string]any
	py.ok("POST", sp+"/comments", nil, nil, strings.NewReader(`{"body": "Checked by phone"}`), &cm)
	py.model("comments.post", cm, commentKeys...)
	var cms []map[string]any
	py.ok("GET", sp+"/comments", nil, nil, nil, &cms)
	py.model("comments.list", cms[0], commentKeys...)

	// submissions.edit: PUT the XML with a deprecatedID, then a comment.
	edit := strings.Replace(instance, "<instanceID>uuid:py-1</instanceID>", "<instanceID>uuid:py-2</instanceID><deprecatedID>uuid:py-1</deprecatedID>", 1)
	edit = strings.Replace(edit, "Ann", "Anne", 1)
	py.ok("PUT", sp, nil, map[string]string{"Content-Type": "application/xml"}, strings.NewReader(edit), &sub)
	py.model("submissions.edit", sub, submissionKeys...)
	if sub["instanceId"] != "uuid:py-1" || sub["reviewState"] != "edited" {
		t.Fatalf("an edit keeps the submission's id and marks it edited: %v", sub)
	}

	// submissions.get_table: OData, with every option pyodk passes.
	var table map[string]any
	py.ok("GET", fp+".svc/Submissions", url.Values{"$top": {"10"}, "$skip": {"0"}, "$count": {"True"}, "$wkt": {"True"},
		"$filter": {"__system/submissionDate gt 2020-01-01"}}, nil, nil, &table)
	rows := table["value"].([]any)
	row := rows[0].(map[string]any)
	if table["@odata.count"] != 1.0 || row["head_name"] != "Anne" || row["location"] != "POINT (30.2 1.5 1200)" || row["__id"] != "uuid:py-1" {
		t.Fatalf("get_table: %v", table)
	}
	py.ok("GET", fp+".svc/Submissions.member", url.Values{"$select": {"age,__id"}}, nil, nil, &table)
	if rows := table["value"].([]any); len(rows) != 2 || rows[0].(map[string]any)["age"] != 30.0 {
		t.Fatalf("get_table of the repeat: %v", table)
	}

	// ruODK's form_schema: Central's field listing, groups and repeats
	// included, paths without the root.
	var fields []map[string]any
	py.ok("GET", fp+"/fields", url.Values{"odata": {"false"}}, nil, nil, &fields)
	byPath := map[string]map[string]any{}
	for _, f := range fields {
		byPath[f["path"].(string)] = f
	}
	if byPath["/member"]["type"] != "repeat" || byPath["/shelter"]["type"] != "structure" || byPath["/shelter/photo"]["binary"] != true ||
		byPath["/needs"]["selectMultiple"] != true || byPath["/members"]["type"] != "int" || byPath["/member/age"]["name"] != "age" {
		t.Fatalf("fields: %v", fields)
	}

	// entity_lists and entities, as pyodk sends them.
	json := map[string]string{"Content-Type": "application/json"}
	var el map[string]any
	py.ok("POST", fmt.Sprintf("projects/%d/datasets", pid), nil, json, strings.NewReader(`{"name": "trees", "approvalRequired": false}`), &el)
	py.model("entity_lists.create", el, entityListKeys...)
	var els []map[string]any
	py.ok("GET", fmt.Sprintf("projects/%d/datasets", pid), nil, nil, nil, &els)
	py.model("entity_lists.list", els[0], entityListKeys...)
	dp := fmt.Sprintf("projects/%d/datasets/trees", pid)
	// entity_list_properties.create sends only a name: Haven asks for the
	// purpose and tier every kept value needs, and says so.
	if st, b := py.do("POST", dp+"/properties", nil, json, strings.NewReader(`{"name": "species"}`)); st != 400 || !strings.Contains(string(b), "purpose") {
		t.Fatalf("a property without purpose: %d %s", st, b)
	}
	py.ok("POST", dp+"/properties", nil, json, strings.NewReader(`{"name": "species", "purpose": "Which trees grow", "sensitivity": "public"}`), nil)
	py.ok("GET", dp, nil, nil, nil, &el)
	py.model("entity_lists.get", el, entityListKeys...)
	props := el["properties"].([]any)
	py.model("entity list property", props[0].(map[string]any), "name", "odataName", "publishedAt", "forms")
	var ent map[string]any
	py.ok("POST", dp+"/entities", nil, json, strings.NewReader(`{"uuid": "6f9c1e2a-1b2c-4d3e-8f4a-5b6c7d8e9f00", "label": "Oak", "data": {"species": "quercus"}}`), &ent)
	py.model("entities.create", ent, entityKeys...)
	py.model("entities.create currentVersion", ent["currentVersion"].(map[string]any), entityVersionKeys...)
	var many map[string]any
	py.ok("POST", dp+"/entities", nil, json, strings.NewReader(`{"entities": [{"label": "Ash", "data": {"species": "fraxinus"}}, {"label": "Elm", "data": {}}], "source": {"name": "pyodk v1.3", "size": 2}}`), &many)
	if many["success"] != true {
		t.Fatalf("create_many answers %v", many)
	}
	var ents []map[string]any
	py.ok("GET", dp+"/entities", nil, nil, nil, &ents)
	if len(ents) != 3 {
		t.Fatalf("entities.list: %v", ents)
	}
	py.model("entities.list", ents[0], entityKeys...)
	py.model("entities.list currentVersion", ents[0]["currentVersion"].(map[string]any), entityVersionKeys...)
	ep := dp + "/entities/6f9c1e2a-1b2c-4d3e-8f4a-5b6c7d8e9f00"
	py.ok("PATCH", ep, url.Values{"baseVersion": {"1"}}, json, strings.NewReader(`{"label": "Old oak", "data": {"species": "quercus robur"}}`), &ent)
	if v := ent["currentVersion"].(map[string]any); v["version"] != 2.0 || v["label"] != "Old oak" {
		t.Fatalf("entities.update: %v", ent)
	}
	if st, _ := py.do("PATCH", ep, url.Values{"baseVersion": {"1"}}, json, strings.NewReader(`{"data": {"species": "x"}}`)); st != 409 {
		t.Fatalf("an update from an old version: %d, want 409", st)
	}
	py.ok("PATCH", ep, url.Values{"force": {"True"}}, json, strings.NewReader(`{"data": {"species": "quercus petraea"}}`), &ent)
	py.ok("GET", dp+".svc/Entities", url.Values{"$top": {"2"}, "$skip": {"0"}, "$count": {"True"}, "$select": {"__id,label,species,__system"}}, nil, nil, &table)
	if rows := table["value"].([]any); len(rows) != 2 || table["@odata.count"] != 3.0 || rows[0].(map[string]any)["species"] != "quercus petraea" {
		t.Fatalf("entities.get_table: %v", table)
	}
	// get_table's filter: on an entity's metadata, as Central's.
	py.ok("GET", dp+".svc/Entities", url.Values{"$filter": {"__system/createdAt gt 2020-01-01 and __system/conflict eq null and __id ne '6f9c1e2a-1b2c-4d3e-8f4a-5b6c7d8e9f00'"}, "$count": {"True"}}, nil, nil, &table)
	if rows := table["value"].([]any); len(rows) != 2 || table["@odata.count"] != 2.0 {
		t.Fatalf("entities.get_table with a filter: %v", table)
	}
	if st, b := py.do("GET", dp+".svc/Entities", url.Values{"$filter": {"species eq 'x'"}}, nil, nil); st != 501 || !strings.Contains(string(b), "__system/conflict") {
		t.Fatalf("a filter on a value: %d %s", st, b)
	}
	var del map[string]any
	py.ok("DELETE", ep, nil, nil, nil, &del)
	if del["success"] != true {
		t.Fatalf("entities.delete: %v", del)
	}
}

// TestCentralSessionLifetime: pyodk keeps one token for a whole script and
// never refreshes it, so by default a token lives as long as its session
// (a day, as Central's); a shorter configured lifetime has refresh.
func TestCentralSessionLifetime(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	e.st.DB.Now = func() time.Time { return now }
	var s struct {
		Token     string
		ExpiresAt time.Time
	}
	e.call("POST", "/v1/sessions", "", map[string]string{"email": adminEmail, "password": adminPassword}, &s)
	if d := s.ExpiresAt.Sub(now); d < 23*time.Hour {
		t.Fatalf("the token lives %v", d)
	}
	now = now.Add(3 * time.Hour)
	if st := e.call("GET", "/v1/users/current", s.Token, nil, nil); st != 200 {
		t.Fatalf("a script's token died after 3 hours: %d", st)
	}
	var restored map[string]any
	if st := e.call("GET", "/v1/sessions/restore", s.Token, nil, &restored); st != 200 || restored["token"] != s.Token {
		t.Fatalf("sessions/restore: %d %v", st, restored)
	}
	now = now.Add(22 * time.Hour)
	if st := e.call("GET", "/v1/users/current", s.Token, nil, nil); st != 401 {
		t.Fatalf("a token outlived its session: %d", st)
	}
}
