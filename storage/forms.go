package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/haven-org/haven"
)

// Forms reads and writes forms, their versions and their media.
type Forms struct {
	DB *DB

	// Lookups on the submission path, cleared by every write of a form.
	forms    ttlCache[formKey, haven.Form]
	versions ttlCache[versionKey, haven.FormVersion]
	lists    ttlCache[int64, []haven.Form]           // by project
	media    ttlCache[int64, []haven.FormAttachment] // by form version
	assigned ttlCache[int64, map[int64]bool]         // an app user's forms, by actor
}

type formKey struct {
	project int64
	id      string
}

type versionKey struct {
	form    int64
	version string
}

// changed forgets cached lookups after a write, here and on other nodes.
func (s *Forms) changed() {
	s.forget()
	s.DB.changed("forms")
}

func (s *Forms) forget() {
	s.forms.clear()
	s.versions.clear()
	s.lists.clear()
	s.media.clear()
	s.assigned.clear()
}

// NewFormVersion is a parsed XForm ready to be stored as a draft.
type NewFormVersion struct {
	XMLFormID string
	Name      string
	Version   string
	XML       []byte
	MD5       string
	Media     []haven.FormAttachment // expected files: Name and Type
	// Made are files the server made with the upload (itemsets.csv), by
	// name, stored but not yet recorded: they are recorded with the version.
	Made map[string]*Blob
	// XLSX is the XLSForm the XForm was converted from, as uploaded, and
	// XLSXType its content type; nil for an uploaded XForm.
	XLSX     []byte
	XLSXType string
}

const formColumns = `f.id, f.project_id, f.xml_form_id, f.state, f.created_at, f.updated_at,
	coalesce(f.current_version_id, 0), coalesce(f.draft_version_id, 0),
	coalesce(v.name, d.name, f.xml_form_id), coalesce(v.version, ''), coalesce(v.md5, ''), v.published_at`

const formJoins = ` FROM forms f LEFT JOIN form_versions v ON v.id = f.current_version_id LEFT JOIN form_versions d ON d.id = f.draft_version_id`

func scanForm(row interface{ Scan(...any) error }) (*haven.Form, error) {
	var f haven.Form
	var created, updated int64
	var published sql.NullInt64
	err := row.Scan(&f.ID, &f.ProjectID, &f.XMLFormID, &f.State, &created, &updated,
		&f.CurrentVersionID, &f.DraftVersionID, &f.Name, &f.Version, &f.Hash, &published)
	if err != nil {
		return nil, err
	}
	f.CreatedAt, f.UpdatedAt, f.PublishedAt = fromMS(created), fromMS(updated), fromNullMS(published)
	return &f, nil
}

// Get returns a project's form by xmlFormId.
func (s *Forms) Get(ctx context.Context, projectID int64, xmlFormID string) (*haven.Form, error) {
	k := formKey{projectID, xmlFormID}
	if f, ok := s.forms.get(k); ok {
		return &f, nil
	}
	gen := s.forms.generation()
	f, err := s.get(ctx, s.DB.read, projectID, xmlFormID)
	if err == nil {
		s.forms.put(k, *f, gen)
	}
	return f, err
}

func (s *Forms) get(ctx context.Context, q queryer, projectID int64, xmlFormID string) (*haven.Form, error) {
	f, err := scanForm(q.QueryRowContext(ctx, `SELECT `+formColumns+formJoins+` WHERE f.project_id = ? AND f.xml_form_id = ?`, projectID, xmlFormID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("Form %q in project %d", xmlFormID, projectID))
	}
	return f, err
}

// List returns a project's forms, by name.
func (s *Forms) List(ctx context.Context, projectID int64) ([]*haven.Form, error) {
	if l, ok := s.lists.get(projectID); ok {
		out := make([]*haven.Form, len(l))
		for i := range l {
			f := l[i]
			out[i] = &f
		}
		return out, nil
	}
	gen := s.lists.generation()
	out, err := s.list(ctx, projectID)
	if err == nil {
		l := make([]haven.Form, len(out))
		for i, f := range out {
			l[i] = *f
		}
		s.lists.put(projectID, l, gen)
	}
	return out, err
}

func (s *Forms) list(ctx context.Context, projectID int64) ([]*haven.Form, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT `+formColumns+formJoins+` WHERE f.project_id = ? ORDER BY 9, f.xml_form_id`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*haven.Form{}
	for rows.Next() {
		f, err := scanForm(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

const versionColumns = `v.id, v.form_id, f.project_id, f.xml_form_id, v.name, v.version, v.md5, v.created_at, v.published_at`

func scanVersion(row interface{ Scan(...any) error }, withXML bool) (*haven.FormVersion, error) {
	var v haven.FormVersion
	var created int64
	var published sql.NullInt64
	dest := []any{&v.ID, &v.FormID, &v.ProjectID, &v.XMLFormID, &v.Name, &v.Version, &v.Hash, &created, &published}
	if withXML {
		dest = append(dest, &v.XML)
	}
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	v.CreatedAt, v.PublishedAt = fromMS(created), fromNullMS(published)
	return &v, nil
}

// Version returns a form version by id, with its XML.
func (s *Forms) Version(ctx context.Context, id int64) (*haven.FormVersion, error) {
	v, err := scanVersion(s.DB.read.QueryRowContext(ctx, `SELECT `+versionColumns+`, v.xml FROM form_versions v JOIN forms f ON f.id = v.form_id WHERE v.id = ?`, id), true)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("That form version")
	}
	return v, err
}

// PublishedVersion returns the published version of a form with the given
// version string, without its XML (the submission path needs only its id).
func (s *Forms) PublishedVersion(ctx context.Context, formID int64, version string) (*haven.FormVersion, error) {
	k := versionKey{formID, version}
	if v, ok := s.versions.get(k); ok {
		return &v, nil
	}
	gen := s.versions.generation()
	v, err := scanVersion(s.DB.read.QueryRowContext(ctx, `SELECT `+versionColumns+` FROM form_versions v JOIN forms f ON f.id = v.form_id
		WHERE v.form_id = ? AND v.version = ? AND v.published_at IS NOT NULL`, formID, version), false)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("Version %q of this form", version))
	}
	if err == nil {
		s.versions.put(k, *v, gen)
	}
	return v, err
}

// Versions lists a form's published versions, newest first.
func (s *Forms) Versions(ctx context.Context, formID int64) ([]*haven.FormVersion, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT `+versionColumns+` FROM form_versions v JOIN forms f ON f.id = v.form_id
		WHERE v.form_id = ? AND v.published_at IS NOT NULL ORDER BY v.published_at DESC, v.id DESC`, formID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*haven.FormVersion{}
	for rows.Next() {
		v, err := scanVersion(rows, false)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// CreateForm stores a new form with nv as its draft, and publishes it at once
// when publish is true. A form with the same xmlFormId must not exist.
func (s *Forms) CreateForm(ctx context.Context, projectID int64, nv NewFormVersion, publish bool) (*haven.Form, error) {
	defer s.changed()
	err := s.DB.Write(ctx, func(tx *Tx) error {
		var n int
		tx.QueryRow(`SELECT count(*) FROM forms WHERE project_id = ? AND xml_form_id = ?`, projectID, nv.XMLFormID).Scan(&n)
		if n > 0 {
			return haven.Errorf(haven.EDUPLICATE, "A form with the id %q already exists in this project. To change it, create a draft (POST .../forms/%s/draft) and publish it with a new version.", nv.XMLFormID, nv.XMLFormID)
		}
		var formID int64
		if err := tx.Insert(&formID, `INSERT INTO forms (project_id, xml_form_id, created_at, updated_at) VALUES (?, ?, ?, ?)`,
			projectID, nv.XMLFormID, ms(tx.Now()), ms(tx.Now())); err != nil {
			return err
		}
		if err := tx.insertDraft(formID, 0, nv); err != nil {
			return err
		}
		if publish {
			return tx.publishDraft(formID, nv.Version, nv.XML, nv.MD5)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, projectID, nv.XMLFormID)
}

// insertDraft stores nv as the form's draft, replacing any draft there was.
// Media files of the same name carry over from the replaced draft, or else
// from the published version.
func (tx *Tx) insertDraft(formID, carryFrom int64, nv NewFormVersion) error {
	var xlsxType any
	if nv.XLSX != nil {
		xlsxType = nv.XLSXType
	}
	var vid int64
	if err := tx.Insert(&vid, `INSERT INTO form_versions (form_id, version, name, xml, md5, created_at, xlsx, xlsx_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		formID, nv.Version, nv.Name, nv.XML, nv.MD5, ms(tx.Now()), nv.XLSX, xlsxType); err != nil {
		return err
	}
	for _, m := range nv.Media {
		var blob sql.NullInt64
		var updated sql.NullInt64
		if made := nv.Made[m.Name]; made != nil {
			if err := tx.RecordBlob(made); err != nil {
				return err
			}
			blob, updated = sql.NullInt64{Int64: made.ID, Valid: true}, sql.NullInt64{Int64: ms(tx.Now()), Valid: true}
		} else if carryFrom != 0 {
			tx.QueryRow(`SELECT blob_id, updated_at FROM form_attachments WHERE form_version_id = ? AND name = ?`, carryFrom, m.Name).Scan(&blob, &updated)
		}
		if _, err := tx.Exec(`INSERT INTO form_attachments (form_version_id, name, type, blob_id, updated_at) VALUES (?, ?, ?, ?, ?)`,
			vid, m.Name, m.Type, blob, updated); err != nil {
			return err
		}
	}
	_, err := tx.Exec(`UPDATE forms SET draft_version_id = ?, updated_at = ? WHERE id = ?`, vid, ms(tx.Now()), formID)
	return err
}

// SetDraft replaces the draft of an existing form with nv (or, with nv nil, starts a
// draft from the published version).
func (s *Forms) SetDraft(ctx context.Context, form *haven.Form, nv *NewFormVersion) error {
	defer s.changed()
	return s.DB.Write(ctx, func(tx *Tx) error {
		f, err := s.get(ctx, tx, form.ProjectID, form.XMLFormID)
		if err != nil {
			return err
		}
		carry := f.DraftVersionID
		if carry == 0 {
			carry = f.CurrentVersionID
		}
		if nv == nil {
			if f.CurrentVersionID == 0 {
				return haven.Errorf(haven.EINVALID, "Form %s has no published version to start a draft from: send the XForm as the request body.", f.XMLFormID)
			}
			cur, err := scanVersion(tx.QueryRow(`SELECT `+versionColumns+`, v.xml FROM form_versions v JOIN forms f ON f.id = v.form_id WHERE v.id = ?`, f.CurrentVersionID), true)
			if err != nil {
				return err
			}
			nv = &NewFormVersion{XMLFormID: f.XMLFormID, Name: cur.Name, Version: cur.Version, XML: cur.XML, MD5: cur.Hash}
			tx.QueryRow(`SELECT xlsx, coalesce(xlsx_type, '') FROM form_versions WHERE id = ?`, f.CurrentVersionID).Scan(&nv.XLSX, &nv.XLSXType)
			rows, err := tx.Query(`SELECT name, type FROM form_attachments WHERE form_version_id = ?`, f.CurrentVersionID)
			if err != nil {
				return err
			}
			for rows.Next() {
				var m haven.FormAttachment
				rows.Scan(&m.Name, &m.Type)
				nv.Media = append(nv.Media, m)
			}
			rows.Close()
		}
		if nv.XMLFormID != f.XMLFormID {
			return haven.Errorf(haven.EINVALID, "The XForm's id is %q but this form is %q: a new version must keep the form id.", nv.XMLFormID, f.XMLFormID)
		}
		if f.DraftVersionID != 0 {
			if err := tx.dropDraft(f.ID, f.DraftVersionID); err != nil {
				return err
			}
		}
		return tx.insertDraft(f.ID, carry, *nv)
	})
}

func (tx *Tx) dropDraft(formID, draftID int64) error {
	if _, err := tx.Exec(`UPDATE forms SET draft_version_id = NULL WHERE id = ?`, formID); err != nil {
		return err
	}
	if _, err := tx.Exec(`DELETE FROM form_attachments WHERE form_version_id = ?`, draftID); err != nil {
		return err
	}
	_, err := tx.Exec(`DELETE FROM form_versions WHERE id = ? AND published_at IS NULL`, draftID)
	return err
}

// DeleteDraft abandons a form's draft.
func (s *Forms) DeleteDraft(ctx context.Context, form *haven.Form) error {
	defer s.changed()
	if form.DraftVersionID == 0 {
		return notFound(fmt.Sprintf("A draft of form %s", form.XMLFormID))
	}
	return s.DB.Write(ctx, func(tx *Tx) error { return tx.dropDraft(form.ID, form.DraftVersionID) })
}

// PublishDraft publishes the form's draft as version, with xml (the draft's
// XML with that version written into it).
func (s *Forms) PublishDraft(ctx context.Context, form *haven.Form, version string, xml []byte, md5 string) error {
	defer s.changed()
	return s.DB.Write(ctx, func(tx *Tx) error {
		return tx.publishDraft(form.ID, version, xml, md5)
	})
}

func (tx *Tx) publishDraft(formID int64, version string, xml []byte, md5 string) error {
	var draft sql.NullInt64
	tx.QueryRow(`SELECT draft_version_id FROM forms WHERE id = ?`, formID).Scan(&draft)
	if !draft.Valid {
		return haven.Errorf(haven.ENOTFOUND, "This form has no draft to publish: create one first.")
	}
	var n int
	tx.QueryRow(`SELECT count(*) FROM form_versions WHERE form_id = ? AND version = ? AND published_at IS NOT NULL`, formID, version).Scan(&n)
	if n > 0 {
		return haven.Errorf(haven.ECONFLICT, "Version %q of this form was already published. Publish with a new version string (?version=...), so devices can tell the versions apart.", version)
	}
	if _, err := tx.Exec(`UPDATE form_versions SET version = ?, xml = ?, md5 = ?, published_at = ? WHERE id = ?`,
		version, xml, md5, ms(tx.Now()), draft.Int64); err != nil {
		return err
	}
	_, err := tx.Exec(`UPDATE forms SET current_version_id = draft_version_id, draft_version_id = NULL, updated_at = ? WHERE id = ?`, ms(tx.Now()), formID)
	return err
}

// SetState opens, closes or sets a form closing.
func (s *Forms) SetState(ctx context.Context, form *haven.Form, state string) error {
	defer s.changed()
	if state != haven.FormOpen && state != haven.FormClosing && state != haven.FormClosed {
		return haven.Errorf(haven.EINVALID, "A form's state is %q, %q or %q, not %q.", haven.FormOpen, haven.FormClosing, haven.FormClosed, state)
	}
	return s.DB.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`UPDATE forms SET state = ?, updated_at = ? WHERE id = ?`, state, ms(tx.Now()), form.ID)
		return err
	})
}

// Attachments lists the media files a form version expects.
func (s *Forms) Attachments(ctx context.Context, versionID int64) ([]haven.FormAttachment, error) {
	if m, ok := s.media.get(versionID); ok {
		return slices.Clone(m), nil
	}
	gen := s.media.generation()
	out, err := s.attachments(ctx, versionID)
	if err == nil {
		s.media.put(versionID, slices.Clone(out), gen)
	}
	return out, err
}

func (s *Forms) attachments(ctx context.Context, versionID int64) ([]haven.FormAttachment, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT a.name, a.type, coalesce(a.blob_id, 0), coalesce(b.md5, ''), coalesce(b.size, 0), a.updated_at
		FROM form_attachments a LEFT JOIN blobs b ON b.id = a.blob_id WHERE a.form_version_id = ? ORDER BY a.name`, versionID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []haven.FormAttachment{}
	for rows.Next() {
		a := haven.FormAttachment{FormVersionID: versionID}
		var updated sql.NullInt64
		if err := rows.Scan(&a.Name, &a.Type, &a.BlobID, &a.Hash, &a.Size, &updated); err != nil {
			return nil, err
		}
		a.Exists, a.UpdatedAt = a.BlobID != 0, fromNullMS(updated)
		out = append(out, a)
	}
	return out, rows.Err()
}

// SetDraftAttachment records an uploaded media file for the form's draft.
// The name must be one the draft expects.
func (s *Forms) SetDraftAttachment(ctx context.Context, form *haven.Form, name string, blob *Blob) error {
	defer s.changed()
	return s.DB.Write(ctx, func(tx *Tx) error {
		if err := tx.RecordBlob(blob); err != nil {
			return err
		}
		res, err := tx.Exec(`UPDATE form_attachments SET blob_id = ?, updated_at = ? WHERE form_version_id = ? AND name = ?`,
			blob.ID, ms(tx.Now()), form.DraftVersionID, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return haven.Errorf(haven.ENOTFOUND, "The draft of form %s does not use a file named %q. Upload only the files the form refers to (GET .../draft/attachments lists them).", form.XMLFormID, name)
		}
		return nil
	})
}

// XLSForm returns the XLSForm a form version was converted from, as
// uploaded, and its content type; nil when it was uploaded as an XForm.
func (s *Forms) XLSForm(ctx context.Context, versionID int64) ([]byte, string, error) {
	var b []byte
	var ct sql.NullString
	err := s.DB.read.QueryRowContext(ctx, `SELECT xlsx, xlsx_type FROM form_versions WHERE id = ?`, versionID).Scan(&b, &ct)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", notFound("That form version")
	}
	return b, ct.String, err
}

// ClearDraftAttachment forgets a media file uploaded for the form's draft
// (the draft then expects it again). It returns the blob it held, for the
// caller to discard.
func (s *Forms) ClearDraftAttachment(ctx context.Context, form *haven.Form, name string) (*Blob, error) {
	defer s.changed()
	var blob *Blob
	err := s.DB.Write(ctx, func(tx *Tx) error {
		blob = nil
		var id sql.NullInt64
		err := tx.QueryRow(`SELECT blob_id FROM form_attachments WHERE form_version_id = ? AND name = ?`, form.DraftVersionID, name).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return haven.Errorf(haven.ENOTFOUND, "The draft of form %s does not use a file named %q.", form.XMLFormID, name)
		} else if err != nil {
			return err
		}
		if !id.Valid {
			return haven.Errorf(haven.ENOTFOUND, "No file %q was uploaded for the draft of form %s.", name, form.XMLFormID)
		}
		if _, err := tx.Exec(`UPDATE form_attachments SET blob_id = NULL, updated_at = ? WHERE form_version_id = ? AND name = ?`,
			ms(tx.Now()), form.DraftVersionID, name); err != nil {
			return err
		}
		// The same file may still serve the published version (drafts
		// carry media over by reference): only an orphan is discarded.
		var users int
		if err := tx.QueryRow(`SELECT count(*) FROM form_attachments WHERE blob_id = ?`, id.Int64).Scan(&users); err != nil {
			return err
		}
		if users == 0 {
			ids, objects, err := tx.selectBlobs(`SELECT id, store, object, data IS NOT NULL FROM blobs WHERE id = ?`, id.Int64)
			if err != nil {
				return err
			}
			if len(objects) > 0 {
				blob = objects[0]
			}
			return tx.deleteBlobRows(ids)
		}
		return nil
	})
	return blob, err
}

// Assign lets an app user list, download and submit to a form.
func (s *Forms) Assign(ctx context.Context, form *haven.Form, actorID int64) error {
	defer s.changed()
	return s.DB.Write(ctx, func(tx *Tx) error {
		var project sql.NullInt64
		if err := tx.QueryRow(`SELECT project_id FROM field_keys WHERE actor_id = ? AND revoked_at IS NULL`, actorID).Scan(&project); errors.Is(err, sql.ErrNoRows) || (err == nil && project.Int64 != form.ProjectID) {
			return haven.Errorf(haven.ENOTFOUND, "There is no app user %d in this project (forms are assigned to app users of their own project).", actorID)
		} else if err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO form_assignments (form_id, actor_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, form.ID, actorID, ms(tx.Now()))
		return err
	})
}

// Unassign takes a form away from an app user.
func (s *Forms) Unassign(ctx context.Context, form *haven.Form, actorID int64) error {
	defer s.changed()
	return s.DB.Write(ctx, func(tx *Tx) error {
		r, err := tx.Exec(`DELETE FROM form_assignments WHERE form_id = ? AND actor_id = ?`, form.ID, actorID)
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return notFound("That form assignment")
		}
		return nil
	})
}

// Assignees lists the app users a form is assigned to.
func (s *Forms) Assignees(ctx context.Context, formID int64) ([]int64, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT actor_id FROM form_assignments WHERE form_id = ? ORDER BY actor_id`, formID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []int64{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// Assigned returns the forms assigned to an app user, by form id.
func (s *Forms) Assigned(ctx context.Context, actorID int64) (map[int64]bool, error) {
	if m, ok := s.assigned.get(actorID); ok {
		return m, nil
	}
	gen := s.assigned.generation()
	rows, err := s.DB.read.QueryContext(ctx, `SELECT form_id FROM form_assignments WHERE actor_id = ?`, actorID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		m[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	s.assigned.put(actorID, m, gen)
	return m, nil
}

// Delete removes a form that holds no submission (its data would go with
// it: erase that first), with its versions, media and assignments.
func (s *Forms) Delete(ctx context.Context, form *haven.Form) ([]*Blob, error) {
	defer s.changed()
	var objects []*Blob
	err := s.DB.Write(ctx, func(tx *Tx) error {
		objects = nil
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM submissions WHERE form_id = ?`, form.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return haven.Errorf(haven.ECONFLICT, "Form %s holds %d submission(s), so deleting it would erase collected data. Haven erases data only on purpose: erase the submissions (or close the form with state closed) first.", form.XMLFormID, n)
		}
		// Records of erased submissions and withdrawn consent keep a device's
		// retry from bringing erased data back and prove the erasure: a form
		// that holds them stays (closed) rather than forget them.
		if err := tx.QueryRow(`SELECT (SELECT count(*) FROM erased_instances WHERE form_id = ?) + (SELECT count(*) FROM consent_withdrawals WHERE form_id = ?)`, form.ID, form.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return haven.Errorf(haven.ECONFLICT, "Form %s keeps the records of %d erased submission(s), which stop devices from sending them again; it cannot be deleted. Close it instead (PATCH with state closed).", form.XMLFormID, n)
		}
		ids, objs, err := tx.selectBlobs(`SELECT DISTINCT b.id, b.store, b.object, b.data IS NOT NULL FROM blobs b
			JOIN form_attachments a ON a.blob_id = b.id JOIN form_versions v ON v.id = a.form_version_id WHERE v.form_id = ?`, form.ID)
		if err != nil {
			return err
		}
		objects = objs
		for _, q := range []string{
			`UPDATE forms SET current_version_id = NULL, draft_version_id = NULL WHERE id = ?`,
			`DELETE FROM form_attachments WHERE form_version_id IN (SELECT id FROM form_versions WHERE form_id = ?)`,
			`DELETE FROM form_assignments WHERE form_id = ?`,
			`DELETE FROM consent_refusals WHERE form_id = ?`,
			`DELETE FROM form_versions WHERE form_id = ?`,
			`DELETE FROM forms WHERE id = ?`,
		} {
			if _, err := tx.Exec(q, form.ID); err != nil {
				return err
			}
		}
		return tx.deleteBlobRows(ids)
	})
	return objects, err
}
