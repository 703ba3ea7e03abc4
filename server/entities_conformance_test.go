package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/beevik/etree"
	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/formspec/xlsform"
)

// TestEntityConformanceEndToEnd takes every form of the conformance corpus
// (recorded from pyxform's own tests) that has an entities sheet and that
// pyxform converts, and runs it through Haven as a project would: the
// workbook is converted, every field is given a purpose and a tier (the
// corpus forms have none, and Haven refuses unmapped fields), it is
// published, and a device fills it in: each entity block creates its
// entity (or updates one made first over the API), which must then be in
// its list, in every item of a repeat.
func TestEntityConformanceEndToEnd(t *testing.T) {
	cases := filepath.Join("..", "..", "shared", "conformance", "xlsform", "cases")
	dirs, err := os.ReadDir(cases)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the conformance corpus is missing (%v): shared/ must sit beside the repository", err)
		}
		t.Skipf("no conformance corpus at %s", cases)
	}
	e := newEnv(t)
	ran := 0
	for _, d := range dirs {
		dir := filepath.Join(cases, d.Name())
		var c struct {
			RootName  string `json:"root_name"`
			PyxformOK bool   `json:"pyxform_ok"`
		}
		raw, err := os.ReadFile(filepath.Join(dir, "case.json"))
		if err != nil || json.Unmarshal(raw, &c) != nil || !c.PyxformOK {
			continue
		}
		md, _ := os.ReadFile(filepath.Join(dir, "form.md"))
		if !strings.Contains(string(md), "| entities |") {
			continue
		}
		xlsx, err := os.ReadFile(filepath.Join(dir, "form.xlsx"))
		if err != nil {
			continue
		}
		ran++
		t.Run(d.Name(), func(t *testing.T) {
			res := xlsform.ConvertWorkbook(xlsx, xlsform.Options{RootName: c.RootName, FormID: "data"})
			if len(res.Errors) > 0 {
				t.Fatalf("not converted: %v", res.Errors)
			}
			form := mapped(t, res.XForm)
			pr := e.emptyProject()
			resp := e.request("POST", fmt.Sprintf("/v1/projects/%d/forms?publish=true", pr.ID), e.token, "application/xml", strings.NewReader(string(form)))
			body := readAll(resp)
			if resp.StatusCode != 200 {
				t.Fatalf("publishing: %d %s\n%s", resp.StatusCode, body, form)
			}
			parsed, err := formspec.Parse(form)
			if err != nil {
				t.Fatal(err)
			}
			_, deviceURL := e.appUser(pr.ID, "Tablet")
			dev := collect.New(deviceURL)
			sub, want := fillIn(t, parsed, form)
			// Updates need their entity: made first over the API.
			for _, w := range want {
				if w.update && !w.create {
					label := "made over the API"
					e.admin("POST", fmt.Sprintf("/v1/projects/%d/datasets/%s/entities", pr.ID, url.PathEscape(w.list)),
						map[string]any{"uuid": w.uuid, "label": label, "data": map[string]string{}}, nil)
				}
			}
			if _, err := dev.Submit(context.Background(), sub, nil); err != nil {
				t.Fatalf("submitting: %v\n%s", err, sub)
			}
			for _, w := range want {
				var got struct {
					CurrentVersion struct {
						Label   string
						Version int
						Data    map[string]string
					}
				}
				st := e.call("GET", fmt.Sprintf("/v1/projects/%d/datasets/%s/entities/%s", pr.ID, url.PathEscape(w.list), w.uuid), e.token, nil, &got)
				switch {
				case st != 200:
					t.Errorf("entity %s of %s: status %d\n%s", w.uuid, w.list, st, sub)
				case w.update && got.CurrentVersion.Version != 2:
					t.Errorf("entity %s of %s was not updated: %+v", w.uuid, w.list, got)
				case !w.update && got.CurrentVersion.Label != w.label:
					t.Errorf("entity %s of %s: label %q, want %q", w.uuid, w.list, got.CurrentVersion.Label, w.label)
				}
				for prop, v := range w.values {
					if got.CurrentVersion.Data[prop] != v {
						t.Errorf("entity %s of %s: %s = %q, want %q", w.uuid, w.list, prop, got.CurrentVersion.Data[prop], v)
					}
				}
			}
		})
	}
	if ran < 50 {
		t.Fatalf("only %d corpus forms with entities ran", ran)
	}
}

// mapped gives every field of a converted form a purpose and a tier and
// the form a legal basis, as a designer must before Haven publishes it.
func mapped(t *testing.T, xform []byte) []byte {
	t.Helper()
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(xform); err != nil {
		t.Fatal(err)
	}
	html := doc.Root()
	html.CreateAttr("xmlns:haven", formspec.Namespace)
	model := html.FindElement("./h:head/model")
	if model == nil {
		model = html.FindElement("./head/model")
	}
	model.CreateAttr("haven:legal-basis", "legitimate_interest")
	model.CreateAttr("haven:default-sensitivity", "public")
	binds := map[string]*etree.Element{}
	for _, b := range model.SelectElements("bind") {
		binds[b.SelectAttrValue("nodeset", "")] = b
	}
	var primary *etree.Element
	for _, in := range model.SelectElements("instance") {
		if in.SelectAttr("id") == nil {
			primary = in.ChildElements()[0]
			break
		}
	}
	var walk func(el *etree.Element, path string)
	walk = func(el *etree.Element, path string) {
		path += "/" + el.Tag
		kids := el.ChildElements()
		if el.Tag == "meta" {
			return
		}
		if len(kids) == 0 {
			b := binds[path]
			if b == nil {
				b = model.CreateElement("bind")
				b.CreateAttr("nodeset", path)
				binds[path] = b
			}
			if b.SelectAttr("haven:purpose") == nil {
				b.CreateAttr("haven:purpose", "Conformance case")
			}
			return
		}
		for _, k := range kids {
			walk(k, path)
		}
	}
	walk(primary, "")
	doc.Indent(2)
	out, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type wantEntity struct {
	list, uuid, label string
	create, update    bool
	values            map[string]string
}

// fillIn makes a submission of the form as a device would: one item of
// each repeat, text answers where entity properties are saved, each
// entity block with an id, a label and its create or update flag.
func fillIn(t *testing.T, f *formspec.Form, xform []byte) ([]byte, []wantEntity) {
	t.Helper()
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(xform); err != nil {
		t.Fatal(err)
	}
	var root *etree.Element
	for _, in := range doc.FindElements("//instance") {
		if in.SelectAttr("id") == nil {
			root = in.ChildElements()[0].Copy()
			break
		}
	}
	saves := map[string]formspec.EntityProperty{}
	for _, b := range f.Entities() {
		for _, p := range b.Properties {
			saves[p.Field.Path] = p
		}
	}
	var want []wantEntity
	n := 0
	var walk func(el *etree.Element, path string)
	walk = func(el *etree.Element, path string) {
		path += "/" + el.Tag
		el.RemoveAttr("jr:template")
		seen := map[string]bool{}
		for _, k := range el.ChildElements() {
			if seen[k.Tag] && f.Node(path+"/"+k.Tag) != nil && f.Node(path+"/"+k.Tag).Repeat {
				el.RemoveChild(k) // one item of each repeat
				continue
			}
			seen[k.Tag] = true
			walk(k, path)
		}
		if el.Tag == "entity" && el.SelectAttr("dataset") != nil {
			n++
			w := wantEntity{list: el.SelectAttrValue("dataset", ""), uuid: fmt.Sprintf("00000000-0000-4000-8000-%012d", n), values: map[string]string{}}
			w.create, w.update = el.SelectAttr("create") != nil, el.SelectAttr("update") != nil
			el.CreateAttr("id", w.uuid)
			if w.create {
				el.CreateAttr("create", "1")
			}
			if w.update {
				el.CreateAttr("update", "1")
				if w.create {
					el.CreateAttr("update", "") // both: a create here
				} else {
					el.CreateAttr("baseVersion", "1")
				}
				w.update = !w.create
			}
			if l := el.SelectElement("label"); l != nil {
				w.label = "Label " + w.uuid[len(w.uuid)-4:]
				l.SetText(w.label)
			}
			// The properties saved by the fields of this block's group.
			scope := strings.TrimSuffix(path, "/meta/entity")
			for fp, p := range saves {
				if b := blockOf(f, fp); b != nil && b.Scope == scope && b.Dataset == w.list {
					w.values[p.Name] = "v-" + p.Field.Name
				}
			}
			want = append(want, w)
		}
		if len(el.ChildElements()) == 0 && el.Tag != "entity" && el.Tag != "label" {
			if p, ok := saves[path]; ok && (p.Field.Type == "string" || p.Field.Type == "") {
				el.SetText("v-" + p.Field.Name)
			}
		}
	}
	walk(root, "")
	meta := root.SelectElement("meta")
	if meta == nil {
		meta = root.CreateElement("meta")
	}
	id := meta.SelectElement("instanceID")
	if id == nil {
		id = meta.CreateElement("instanceID")
	}
	id.SetText("uuid:" + strings.TrimPrefix(formspec.NewInstanceID(), "uuid:"))
	out := etree.NewDocument()
	out.SetRoot(root)
	b, err := out.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	// Values of fields that are not text were left empty: no value to expect.
	for i := range want {
		for prop, v := range want[i].values {
			if !strings.Contains(string(b), ">"+v+"<") {
				delete(want[i].values, prop)
			}
		}
	}
	return b, want
}

func blockOf(f *formspec.Form, fieldPath string) *formspec.EntityBlock {
	var best *formspec.EntityBlock
	for _, b := range f.Entities() {
		if strings.HasPrefix(fieldPath, b.Scope+"/") && (best == nil || len(b.Scope) > len(best.Scope)) {
			b := b
			best = &b
		}
	}
	return best
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
