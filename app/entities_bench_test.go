package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"os"
	"strconv"
	"testing"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/formspec/xlsform/xlsxtest"
)

const benchRegistration = `
| survey |
| | type    | name    | label | save_to | purpose | sensitivity |
| | text    | hh_name | Name  | hh_name | Find it | level_2     |
| | text    | area    | Area  | area    | Plan    | level_1     |
| | integer | size    | Size  | size    | Rations | public      |
| settings |
| | form_id | version | legal_basis     |
| | reg     | 1       | public_interest |
| entities |
| | list_name  | label      |
| | households | ${hh_name} |
`

const benchFollowUp = `
| survey |
| | type                                | name | label | choice_filter | save_to | purpose | sensitivity |
| | text                                | area | Area  |               |         | Where   | level_1     |
| | select_one_from_file households.csv | hh   | HH    | area = ${area} |        | Which   | level_1     |
| | integer                             | size | Size  |               | size    | Rations | public      |
| settings |
| | form_id | version | legal_basis     |
| | fu      | 1       | public_interest |
| entities |
| | list_name  | entity_id |
| | households | ${hh}     |
`

// BenchmarkEntityListDownload measures what a device's form refresh costs
// the server for a follow-up form reading a list of HAVEN_ENTITIES_N
// entities (10,000 by default): the manifest (which hashes the list made
// for the device) and the list's download.
func BenchmarkEntityListDownload(b *testing.B) {
	n := 10_000
	if v, err := strconv.Atoi(os.Getenv("HAVEN_ENTITIES_N")); err == nil && v > 0 {
		n = v
	}
	svc, pid, _, _ := setup(b)
	ctx := context.Background()
	admin := &haven.Principal{Admin: true}
	for _, md := range []string{benchRegistration, benchFollowUp} {
		x, err := xlsxtest.FromMarkdown(md)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := svc.CreateForm(ctx, admin, pid, app.Upload{Body: x, ContentType: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}, true); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < n; i += 1000 {
		var batch []app.EntityInput
		for j := i; j < min(i+1000, n); j++ {
			label := fmt.Sprintf("Household %d", j)
			batch = append(batch, app.EntityInput{Label: &label, Data: map[string]string{"hh_name": label, "area": []string{"north", "south"}[j%2], "size": strconv.Itoa(j % 9)}})
		}
		if _, err := svc.CreateEntities(ctx, admin, pid, "households", batch); err != nil {
			b.Fatal(err)
		}
	}
	p := &haven.Principal{ActorID: 1, Type: haven.ActorUser, Roles: map[int64][]string{pid: {haven.RoleFormFill}}, Clearances: map[int64]haven.Sensitivity{pid: haven.Level1}}
	refresh := func(b *testing.B) int64 {
		files, err := svc.Manifest(ctx, p, pid, "fu")
		if err != nil || len(files) != 1 {
			b.Fatalf("%v %v", files, err)
		}
		rc, _, err := svc.FormMedia(ctx, p, pid, "fu", "households.csv")
		if err != nil {
			b.Fatal(err)
		}
		defer rc.Close()
		size, _ := io.Copy(io.Discard, rc)
		return size
	}
	all, err := svc.Entities(ctx, admin, pid, "households", false)
	if err != nil {
		b.Fatal(err)
	}
	// unchanged: devices refreshing while the list stays the same (the
	// common case: the list made for them is kept).
	b.Run("unchanged", func(b *testing.B) {
		var size int64
		for i := 0; i < b.N; i++ {
			size = refresh(b)
		}
		b.ReportMetric(float64(size), "csv-bytes")
	})
	// changed: one entity updated before each refresh, so the list is
	// made again (every entity decrypted).
	b.Run("changed", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			size := strconv.Itoa(i % 9)
			if _, err := svc.UpdateEntity(ctx, admin, pid, "households", all[i%len(all)].UUID, app.EntityInput{Data: map[string]string{"size": size}}, 0, true, false); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			refresh(b)
		}
	})
}

// benchPlain is benchRegistration without its entities.
const benchPlain = `
| survey |
| | type    | name    | label | purpose | sensitivity |
| | text    | hh_name | Name  | Find it | level_2     |
| | text    | area    | Area  | Plan    | level_1     |
| | integer | size    | Size  | Rations | public      |
| settings |
| | form_id | version | legal_basis     |
| | reg     | 1       | public_interest |
`

// BenchmarkSubmitRegistration stores registrations one after the other:
// with the entities sheet (each submission makes a household, applied
// before the request returns) and, for comparison, the same form without
// it.
func BenchmarkSubmitRegistration(b *testing.B) {
	for _, c := range []struct {
		name, form string
		entity     bool
	}{{"entity", benchRegistration, true}, {"plain", benchPlain, false}} {
		b.Run(c.name, func(b *testing.B) {
			svc, pid, _, _ := setup(b)
			ctx := context.Background()
			admin := &haven.Principal{Admin: true}
			x, err := xlsxtest.FromMarkdown(c.form)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := svc.CreateForm(ctx, admin, pid, app.Upload{Body: x, ContentType: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}, true); err != nil {
				b.Fatal(err)
			}
			p := &haven.Principal{ActorID: 1, Type: haven.ActorUser, Roles: map[int64][]string{pid: {haven.RoleFormFill}}}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ent := ""
				if c.entity {
					ent = fmt.Sprintf(`<entity dataset="households" create="1" id="00000000-0000-4000-8000-%012d"><label>H %d</label></entity>`, i, i)
				}
				xml := fmt.Sprintf(`<data id="reg" version="1"><hh_name>H %d</hh_name><area>north</area><size>4</size><meta><instanceID>uuid:b-%d</instanceID>%s</meta></data>`, i, i, ent)
				mr := multipart.NewReader(bytes.NewReader(body([3]string{"xml_submission_file", "submission.xml", xml})), "BOUNDARY")
				if rec, err := svc.Submit(ctx, app.SubmitRequest{Principal: p, ProjectID: pid, Parts: mr}); err != nil || !rec.Created {
					b.Fatalf("%+v %v", rec, err)
				}
			}
			b.StopTimer()
			if c.entity {
				if l, err := svc.EntityList(ctx, admin, pid, "households"); err != nil || l.Entities != b.N {
					b.Fatalf("%d entities for %d submissions (%v)", l.Entities, b.N, err)
				}
			}
		})
	}
}
