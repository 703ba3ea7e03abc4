package server_test

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
)

// odataPage is one page of an OData table.
type odataPage struct {
	Value    []map[string]any `json:"value"`
	Context  string           `json:"@odata.context"`
	NextLink string           `json:"@odata.nextLink"`
	Count    *int             `json:"@odata.count"`
	Omitted  []string         `json:"@haven.omittedFields"`
}

// odataGet reads an absolute OData URL (a next link) with a token.
func (e *env) odataGet(abs, token string) (odataPage, int) {
	e.t.Helper()
	var p odataPage
	resp := e.request("GET", strings.TrimPrefix(abs, e.srv.URL), token, "", nil)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 {
		if resp.Header.Get("OData-Version") != "4.0" {
			e.t.Fatalf("%s: no OData-Version header", abs)
		}
		if err := json.Unmarshal(b, &p); err != nil {
			e.t.Fatalf("%s: %v", abs, err)
		}
	}
	return p, resp.StatusCode
}

// TestODataPagesWithinClearance is what an OData consumer (pyodk's
// get_table, ruODK, Power BI) does: read $metadata, then page through a
// form of 10,000 submissions with repeats by following @odata.nextLink,
// here as a data manager cleared for level_1: the level_2 and level_3
// fields are in neither the metadata nor any row, and every page names
// them.
func TestODataPagesWithinClearance(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	n := 10000
	if testing.Short() {
		n = 1000
	}
	// Submissions from 16 devices at once (group commit keeps this quick);
	// each has two members, a level_3 name and a level_2 location.
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				doc := fmt.Sprintf(`<household xmlns:orx="http://openrosa.org/xforms" id="household" version="2026110101">`+
					`<district>%s</district><head_name>L3NAME%d</head_name><members>%d</members><location>2.04 45.34 12 5</location>`+
					`<member><age>%d</age><sex>f</sex></member><member><age>%d</age><sex>m</sex></member>`+
					`<orx:meta><orx:instanceID>uuid:od-%05d</orx:instanceID></orx:meta></household>`, []string{"north", "south"}[i%2], i, i%9, 30+i%40, i%12, i)
				if _, err := dev.Submit(ctx, []byte(doc), nil); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var u struct{ ID int64 }
	e.admin("POST", "/v1/users", map[string]string{"email": "dm@example.org", "password": "a long enough password"}, &u)
	e.admin("POST", fmt.Sprintf("/v1/projects/%d/assignments/datamanager/%d", pid, u.ID), nil, nil)
	e.admin("PUT", fmt.Sprintf("/v1/projects/%d/clearances/%d", pid, u.ID), map[string]string{"clearance": "level_1"}, nil)
	dm := e.login("dm@example.org", "a long enough password")
	svc := fmt.Sprintf("%s/v1/projects/%d/forms/household.svc", e.srv.URL, pid)
	hidden := []string{"head_name", "location", "photo", "instanceName"}

	// The service document and $metadata, as the reader sees the form.
	var doc struct {
		Value []struct{ Name, URL string }
	}
	if st := e.call("GET", strings.TrimPrefix(svc, e.srv.URL), dm, nil, &doc); st != 200 || len(doc.Value) != 2 || doc.Value[1].Name != "Submissions.member" {
		t.Fatalf("service document: %d %+v", st, doc)
	}
	resp := e.request("GET", strings.TrimPrefix(svc, e.srv.URL)+"/$metadata", dm, "", nil)
	meta, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var edmx struct {
		Schemas []struct {
			Namespace   string `xml:"Namespace,attr"`
			EntityTypes []struct {
				Name  string `xml:"Name,attr"`
				Props []struct {
					Name string `xml:"Name,attr"`
					Type string `xml:"Type,attr"`
				} `xml:"Property"`
			} `xml:"EntityType"`
		} `xml:"DataServices>Schema"`
	}
	if err := xml.Unmarshal(meta, &edmx); err != nil || len(edmx.Schemas) != 2 || len(edmx.Schemas[1].EntityTypes) != 2 {
		t.Fatalf("$metadata: %v\n%s", err, meta)
	}
	types := map[string]string{}
	for _, p := range edmx.Schemas[1].EntityTypes[0].Props {
		types[p.Name] = p.Type
	}
	if types["members"] != "Edm.Int64" || types["__system"] != "org.opendatakit.submission.metadata" || types["district"] != "Edm.String" {
		t.Fatalf("$metadata types: %v", types)
	}
	for _, h := range hidden {
		if strings.Contains(string(meta), `"`+h+`"`) {
			t.Errorf("$metadata names %s, above the reader's clearance", h)
		}
	}

	// Every submission, 1,000 at a time, newest first, each once.
	seen := map[string]bool{}
	next, pages := svc+"/Submissions?$top=1000&$count=true", 0
	for next != "" {
		p, st := e.odataGet(next, dm)
		if st != 200 {
			t.Fatalf("page %d: %d", pages, st)
		}
		pages++
		if p.Count == nil || *p.Count != n || len(p.Omitted) != len(hidden) {
			t.Fatalf("page %d: count %v, omitted %v", pages, p.Count, p.Omitted)
		}
		for _, row := range p.Value {
			id := row["__id"].(string)
			if seen[id] {
				t.Fatalf("%s twice", id)
			}
			seen[id] = true
			for _, h := range hidden {
				if _, ok := row[h]; ok {
					t.Fatalf("%s reached a level_1 reader: %v", h, row)
				}
			}
			if _, ok := row["members"].(float64); !ok || row["member@odata.navigationLink"] != "Submissions('"+strings.ReplaceAll(id, ":", "%3A")+"')/member" {
				t.Fatalf("row: %v", row)
			}
		}
		next = p.NextLink
	}
	if len(seen) != n || pages != (n+999)/1000 || !seen["uuid:od-00000"] || !seen[fmt.Sprintf("uuid:od-%05d", n-1)] {
		t.Fatalf("%d submissions in %d pages", len(seen), pages)
	}

	// The repeat's table: two rows a submission, each linked to its parent.
	members := 0
	next = svc + "/Submissions.member?$top=3000"
	for next != "" {
		p, st := e.odataGet(next, dm)
		if st != 200 {
			t.Fatalf("members: %d", st)
		}
		for _, row := range p.Value {
			if !seen[row["__Submissions-id"].(string)] || len(row["__id"].(string)) != 40 {
				t.Fatalf("member row: %v", row)
			}
			members++
		}
		next = p.NextLink
	}
	if members != 2*n {
		t.Fatalf("%d member rows for %d submissions", members, n)
	}

	// A filter on metadata, and one submission with its members inline.
	p, _ := e.odataGet(svc+"/Submissions?$filter="+url.QueryEscape("__id eq 'uuid:od-00042' or __system/submitterId eq 0")+"&$expand=*", dm)
	if len(p.Value) != 1 || len(p.Value[0]["member"].([]any)) != 2 {
		t.Fatalf("filter and $expand: %+v", p.Value)
	}
	// The administrator (level_3) sees the name.
	p, _ = e.odataGet(svc+"/Submissions('uuid:od-00042')", e.token)
	if len(p.Value) != 1 || p.Value[0]["head_name"] != "L3NAME42" || len(p.Omitted) != 0 {
		t.Fatalf("administrator's row: %+v", p)
	}
	if os.Getenv("HAVEN_ODATA_DUMP") != "" {
		b, _ := json.MarshalIndent(p, "", "  ")
		t.Logf("%s", b)
	}
}
