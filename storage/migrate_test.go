package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/haven-org/haven"
)

// openAsOf opens dir as a Haven whose newest migration was version v left it.
func openAsOf(t *testing.T, dir string, v int) *Store {
	t.Helper()
	migrationsUpTo = v
	defer func() { migrationsUpTo = 0 }()
	st, err := OpenDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func dump(t *testing.T, db *DB, q string) string {
	t.Helper()
	rows, err := db.read.db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var b strings.Builder
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%q\n", vals)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// Migration 0009 rebuilds submissions without its second instanceID index.
// A database written before it must come through with every row and every
// reference intact, foreign keys enforced again, and instanceIDs still
// unique and found by index.
func TestMigrationRebuildsSubmissions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openAsOf(t, dir, 8)
	if got := dump(t, st.DB, `SELECT name FROM pragma_index_list('submissions') WHERE "unique"`); got == "" {
		t.Fatal("before 0009, submissions should have its unique index")
	}
	// The project as an older Haven wrote it (today's queries read columns
	// the old schema lacks).
	pr := &haven.Project{}
	err := st.DB.Write(ctx, func(tx *Tx) error {
		r, err := tx.Exec(`INSERT INTO projects (name, created_at, updated_at) VALUES ('P', 0, 0)`)
		if err != nil {
			return err
		}
		pr.ID, _ = r.LastInsertId()
		return st.Keys.createProjectKey(tx, pr.ID)
	})
	if err != nil {
		t.Fatal(err)
	}
	var formID, versionID int64
	err = st.DB.Write(ctx, func(tx *Tx) error {
		r, err := tx.Exec(`INSERT INTO forms (project_id, xml_form_id, created_at, updated_at) VALUES (?, 'f', 0, 0)`, pr.ID)
		if err != nil {
			return err
		}
		formID, _ = r.LastInsertId()
		r, err = tx.Exec(`INSERT INTO form_versions (form_id, version, name, xml, md5, created_at, published_at) VALUES (?, '1', 'f', x'00', '', 0, 0)`, formID)
		if err != nil {
			return err
		}
		versionID, _ = r.LastInsertId()
		_, err = tx.Exec(`INSERT INTO actors (id, type, display_name, created_at, updated_at) VALUES (1, 'field_key', 't', 0, 0)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ingest := func(st *Store, id, deprecated, xml string) (*IngestResult, error) {
		return st.Submissions.Ingest(ctx, &Incoming{ProjectID: pr.ID, FormID: formID, FormVersionID: versionID,
			InstanceID: id, DeprecatedID: deprecated, XML: []byte(xml), SubmitterID: 1, DeviceID: "collect:x",
			Consent: &haven.ConsentRecord{Outcome: "given", LegalBasis: haven.BasisConsent, DeviceUserID: 1}})
	}
	// Rows as the Haven of 0008 wrote them: sealed under the project key.
	pk, err := st.Keys.ProjectKey(ctx, pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	err = st.DB.Write(ctx, func(tx *Tx) error {
		subIDs := map[string]int64{}
		for i, x := range []struct{ id, deprecated string }{{"uuid:a", ""}, {"uuid:b", ""}, {"uuid:c", ""}, {"uuid:b2", "uuid:b"}} {
			xml := fmt.Sprintf("<d>%d</d>", i)
			device := pk.Seal([]byte("collect:x"), deviceAAD(formID, x.id))
			sid := subIDs[x.deprecated]
			if sid == 0 {
				r, err := tx.Exec(`INSERT INTO submissions (form_id, instance_id, submitter_id, device_id, created_at) VALUES (?, ?, 1, ?, ?)`, formID, x.id, device, i)
				if err != nil {
					return err
				}
				sid, _ = r.LastInsertId()
				if _, err := tx.Exec(`INSERT INTO consent_records (submission_id, form_version_id, outcome, legal_basis, received_at, device_user_id, device_id)
					VALUES (?, ?, 'given', 'consent', 0, 1, ?)`, sid, versionID, device); err != nil {
					return err
				}
			} else if _, err := tx.Exec(`UPDATE submission_versions SET current = 0 WHERE submission_id = ?`, sid); err != nil {
				return err
			}
			subIDs[x.id] = sid
			if _, err := tx.Exec(`INSERT INTO submission_versions (submission_id, form_id, form_version_id, instance_id, deprecated_id, xml, xml_mac,
				submitter_id, device_id, current, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, 1, ?)`,
				sid, formID, versionID, x.id, x.deprecated, pk.Seal([]byte(xml), xmlAAD(formID, x.id)), pk.MAC([]byte(xml)), device, i); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const (
		subs     = `SELECT id, form_id, instance_id, submitter_id, device_id, review_state, created_at, updated_at FROM submissions ORDER BY id`
		versions = `SELECT id, submission_id, instance_id, deprecated_id, current FROM submission_versions ORDER BY id`
		consents = `SELECT submission_id, outcome FROM consent_records ORDER BY submission_id`
	)
	before := dump(t, st.DB, subs) + dump(t, st.DB, versions) + dump(t, st.DB, consents)
	st.Close()

	st = openAsOf(t, dir, 0)
	defer st.Close()
	if got := dump(t, st.DB, `SELECT version FROM schema_migrations WHERE version = 9`); got == "" {
		t.Fatal("0009 not recorded")
	}
	if after := dump(t, st.DB, subs) + dump(t, st.DB, versions) + dump(t, st.DB, consents); after != before {
		t.Fatalf("rows changed:\nbefore\n%s\nafter\n%s", before, after)
	}
	if got := dump(t, st.DB, `SELECT name FROM pragma_index_list('submissions')`); got != "[\"submissions_form_created\"]\n" {
		t.Fatalf("indexes of submissions after 0009: %s", got)
	}
	if got := dump(t, st.DB, `PRAGMA foreign_key_check`); got != "" {
		t.Fatalf("broken references: %s", got)
	}
	if got := dump(t, st.DB, `SELECT DISTINCT "table" FROM pragma_foreign_key_list('submission_versions') WHERE "from" = 'submission_id'`); got != "[\"submissions\"]\n" {
		t.Fatalf("submission_versions refers to %s", got)
	}
	if ok, err := st.DB.IntegrityCheck(ctx); err != nil || ok != "ok" {
		t.Fatalf("integrity: %q %v", ok, err)
	}
	// Foreign keys are enforced again on the write connection.
	err = st.DB.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`INSERT INTO consent_records (submission_id, form_version_id, outcome, legal_basis, received_at, device_user_id) VALUES (999, ?, 'given', 'consent', 0, 1)`, versionID)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "FOREIGN KEY") {
		t.Fatalf("a consent record of no submission was accepted: %v", err)
	}

	// A rebuild that would leave a reference dangling is refused whole, and
	// foreign keys are back on after it.
	err = st.DB.applyMigration(ctx, 99, "0099_broken.sql", fkOffMarker+`DELETE FROM submissions WHERE instance_id = 'uuid:a';`)
	if err == nil || !strings.Contains(err.Error(), "refers to a row that is no longer there") {
		t.Fatalf("a migration breaking references: %v", err)
	}
	if after := dump(t, st.DB, subs); !strings.Contains(after, "uuid:a") || dump(t, st.DB, `SELECT version FROM schema_migrations WHERE version = 99`) != "" {
		t.Fatal("the refused migration left changes behind")
	}
	err = st.DB.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`DELETE FROM submissions WHERE instance_id = 'uuid:a'`)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "FOREIGN KEY") {
		t.Fatalf("foreign keys are off after a refused migration: %v", err)
	}

	// instanceIDs are still unique, resends still recognised, lookups still work.
	if r, err := ingest(st, "uuid:a", "", "<d>0</d>"); err != nil || !r.Duplicate {
		t.Fatalf("resend after 0009: %+v %v", r, err)
	}
	var e *haven.Error
	if _, err := ingest(st, "uuid:a", "", "<d>other</d>"); !errors.As(err, &e) || e.Code != haven.ECONFLICT {
		t.Fatalf("a different submission with a known instanceID: %v", err)
	}
	if _, err := ingest(st, "uuid:d", "", "<d>new</d>"); err != nil {
		t.Fatal(err)
	}
	if sub, err := st.Submissions.Get(ctx, pr.ID, formID, "uuid:b"); err != nil || sub.Current.InstanceID != "uuid:b2" {
		t.Fatalf("Get by the first instanceID: %+v %v", sub, err)
	}
	if _, err := st.Submissions.Get(ctx, pr.ID, formID, "uuid:b2"); !errors.As(err, &e) || e.Code != haven.ENOTFOUND {
		t.Fatalf("Get by an edit's instanceID: %v", err)
	}
	if err := st.Submissions.Delete(ctx, st.Blobs, formID, "uuid:c", nil); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, st.DB, `SELECT instance_id FROM submissions ORDER BY id`); got != "[\"uuid:a\"]\n[\"uuid:b\"]\n[\"uuid:d\"]\n" {
		t.Fatalf("after deleting uuid:c: %s", got)
	}
}

// The lookups by instanceID that lost submissions' own index must search
// the versions' index, not scan the form's submissions.
func TestFirstInstanceIDUsesIndex(t *testing.T) {
	st := openAsOf(t, t.TempDir(), 0)
	defer st.Close()
	for _, q := range []string{
		`SELECT s.id FROM submissions s WHERE ` + firstInstanceID,
		`SELECT ` + submissionColumns + submissionJoins + ` WHERE ` + firstInstanceID,
	} {
		plan := dump(t, st.DB, `EXPLAIN QUERY PLAN `+strings.Replace(strings.Replace(strings.Replace(q, "?", "1", 1), "?", "'uuid:a'", 1), "?", "'uuid:a'", 1))
		if !strings.Contains(plan, "sqlite_autoindex_submission_versions_1") || strings.Contains(plan, "SCAN s") {
			t.Errorf("plan of %s:\n%s", q, plan)
		}
	}
}
