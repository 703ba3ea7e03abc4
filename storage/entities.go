package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/haven-org/haven"
)

// Entities stores entity lists, their entities and every version of each.
//
// A version's label and values are sealed under the entity's own key, a
// slot in its project's slot file as a submission's key is: erasing the
// entity (on request, or with the submission that made it) zeroes the
// slot, and whatever copy of the ciphertext survives opens with nothing.
// An erased or deleted entity leaves a tombstone (its list, uuid and when)
// so that devices learn it is gone and a resend cannot bring it back.
type Entities struct {
	DB    *DB
	Keys  *Keyring
	Audit *Audit
}

// ListDecl is what a form version declares about an entity list it saves to.
type ListDecl struct {
	Name           string
	Create, Update bool
	LabelTier      haven.Sensitivity
	Properties     []haven.EntityProperty
}

// Declare records the lists a form version saves to, with their properties
// (a property's tier only ever rises: the strictest any form gives), and
// what the version may do to each. It runs before the version is
// published, so no submission to it can find its list missing.
func (s *Entities) Declare(ctx context.Context, projectID, formVersionID int64, decls []ListDecl) error {
	if len(decls) == 0 {
		return nil
	}
	return s.DB.Write(ctx, func(tx *Tx) error {
		for _, d := range decls {
			id, err := tx.ensureList(projectID, d.Name)
			if err != nil {
				return err
			}
			for _, p := range d.Properties {
				if err := tx.ensureProperty(id, p); err != nil {
					return err
				}
			}
			var actions []string
			if d.Create {
				actions = append(actions, "create")
			}
			if d.Update {
				actions = append(actions, "update")
			}
			if _, err := tx.Exec(`INSERT INTO entity_list_forms (list_id, form_version_id, actions, label_tier) VALUES (?, ?, ?, ?)
				ON CONFLICT (list_id, form_version_id) DO UPDATE SET actions = excluded.actions, label_tier = excluded.label_tier`,
				id, formVersionID, strings.Join(actions, ","), string(d.LabelTier)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (tx *Tx) ensureList(projectID int64, name string) (int64, error) {
	var id int64
	err := tx.QueryRow(`SELECT id FROM entity_lists WHERE project_id = ? AND name = ?`, projectID, name).Scan(&id)
	if !errors.Is(err, sql.ErrNoRows) {
		return id, err
	}
	err = tx.Insert(&id, `INSERT INTO entity_lists (project_id, name, approval_required, created_at) VALUES (?, ?, 0, ?)`, projectID, name, ms(tx.Now()))
	return id, err
}

func (tx *Tx) ensureProperty(listID int64, p haven.EntityProperty) error {
	var tier, purpose string
	err := tx.QueryRow(`SELECT tier, purpose FROM entity_properties WHERE list_id = ? AND name = ?`, listID, p.Name).Scan(&tier, &purpose)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err = tx.Exec(`INSERT INTO entity_properties (list_id, name, purpose, tier, position, created_at)
			VALUES (?, ?, ?, ?, (SELECT coalesce(max(position), 0) + 1 FROM entity_properties WHERE list_id = ?), ?)`,
			listID, p.Name, p.Purpose, string(p.Sensitivity), listID, ms(tx.Now()))
		return err
	case err != nil:
		return err
	}
	if haven.Sensitivity(tier).Rank() >= p.Sensitivity.Rank() && purpose != "" {
		return nil
	}
	if haven.Sensitivity(tier).Rank() < p.Sensitivity.Rank() {
		tier = string(p.Sensitivity)
	}
	if purpose == "" {
		purpose = p.Purpose
	}
	_, err = tx.Exec(`UPDATE entity_properties SET tier = ?, purpose = ? WHERE list_id = ? AND name = ?`, tier, purpose, listID, p.Name)
	return err
}

// CreateList makes an entity list by name (Central's POST .../datasets).
func (s *Entities) CreateList(ctx context.Context, projectID int64, name string, approval bool, audit *haven.AuditEvent) (*haven.EntityList, error) {
	err := s.DB.Write(ctx, func(tx *Tx) error {
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM entity_lists WHERE project_id = ? AND name = ?`, projectID, name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return haven.Errorf(haven.ECONFLICT, "The entity list %q already exists in project %d.", name, projectID)
		}
		var id int64
		if err := tx.Insert(&id, `INSERT INTO entity_lists (project_id, name, approval_required, created_at) VALUES (?, ?, ?, ?)`,
			projectID, name, boolInt(approval), ms(tx.Now())); err != nil {
			return err
		}
		return s.audit(tx, audit)
	})
	if err != nil {
		return nil, err
	}
	return s.List(ctx, projectID, name)
}

// AddProperty adds a property to a list (Central's POST .../properties).
func (s *Entities) AddProperty(ctx context.Context, list *haven.EntityList, p haven.EntityProperty, audit *haven.AuditEvent) error {
	return s.DB.Write(ctx, func(tx *Tx) error {
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM entity_properties WHERE list_id = ? AND name = ?`, list.ID, p.Name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return haven.Errorf(haven.ECONFLICT, "The entity list %q already has a property %q.", list.Name, p.Name)
		}
		if err := tx.ensureProperty(list.ID, p); err != nil {
			return err
		}
		return s.audit(tx, audit)
	})
}

// SetApproval sets whether the list's entities are made only when their
// submission is approved.
func (s *Entities) SetApproval(ctx context.Context, list *haven.EntityList, approval bool, audit *haven.AuditEvent) error {
	return s.DB.Write(ctx, func(tx *Tx) error {
		if _, err := tx.Exec(`UPDATE entity_lists SET approval_required = ? WHERE id = ?`, boolInt(approval), list.ID); err != nil {
			return err
		}
		list.ApprovalRequired = approval
		return s.audit(tx, audit)
	})
}

func (s *Entities) audit(tx *Tx, e *haven.AuditEvent) error {
	if e == nil || s.Audit == nil {
		return nil
	}
	return s.Audit.Append(tx, e)
}

func scanList(row interface{ Scan(...any) error }) (*haven.EntityList, error) {
	l := &haven.EntityList{}
	var approval, created int64
	if err := row.Scan(&l.ID, &l.ProjectID, &l.Name, &approval, &created); err != nil {
		return nil, err
	}
	l.ApprovalRequired, l.CreatedAt = approval != 0, fromMS(created)
	return l, nil
}

const listColumns = `id, project_id, name, approval_required, created_at`

// Lists returns a project's entity lists by name.
func (s *Entities) Lists(ctx context.Context, projectID int64) ([]*haven.EntityList, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT `+listColumns+` FROM entity_lists WHERE project_id = ? ORDER BY name`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*haven.EntityList{}
	for rows.Next() {
		l, err := scanList(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// List returns a project's entity list by name.
func (s *Entities) List(ctx context.Context, projectID int64, name string) (*haven.EntityList, error) {
	l, err := scanList(s.DB.read.QueryRowContext(ctx, `SELECT `+listColumns+` FROM entity_lists WHERE project_id = ? AND name = ?`, projectID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, haven.Errorf(haven.ENOTFOUND, "Project %d has no entity list named %q.", projectID, name)
	}
	return l, err
}

// Properties returns a list's properties in the order they were declared.
func (s *Entities) Properties(ctx context.Context, listID int64) ([]haven.EntityProperty, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT name, purpose, tier, created_at FROM entity_properties WHERE list_id = ? ORDER BY position`, listID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []haven.EntityProperty{}
	for rows.Next() {
		var p haven.EntityProperty
		var tier string
		var at int64
		if err := rows.Scan(&p.Name, &p.Purpose, &tier, &at); err != nil {
			return nil, err
		}
		p.Sensitivity, p.CreatedAt = haven.Sensitivity(tier), fromMS(at)
		out = append(out, p)
	}
	return out, rows.Err()
}

// ListForm is a form that saves to a list.
type ListForm struct {
	XMLFormID string `json:"xmlFormId"`
	Name      string `json:"name"`
}

// SourceForms lists the published forms whose versions save to a list.
func (s *Entities) SourceForms(ctx context.Context, listID int64) ([]ListForm, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT DISTINCT f.xml_form_id, coalesce(cv.name, f.xml_form_id) FROM entity_list_forms lf
		JOIN form_versions v ON v.id = lf.form_version_id JOIN forms f ON f.id = v.form_id LEFT JOIN form_versions cv ON cv.id = f.current_version_id
		WHERE lf.list_id = ? AND v.published_at IS NOT NULL ORDER BY f.xml_form_id`, listID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []ListForm{}
	for rows.Next() {
		var f ListForm
		if err := rows.Scan(&f.XMLFormID, &f.Name); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// LabelTier is the tier of a list's labels: the strictest any form that
// saves to it gives the label it builds; level_3 when no form builds one.
func (s *Entities) LabelTier(ctx context.Context, listID int64) (haven.Sensitivity, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT label_tier FROM entity_list_forms WHERE list_id = ?`, listID)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	tier := haven.Sensitivity("")
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return "", err
		}
		if t != "" && (tier == "" || haven.Sensitivity(t).Rank() > tier.Rank()) {
			tier = haven.Sensitivity(t)
		}
	}
	if tier == "" {
		tier = haven.Level3
	}
	return tier, rows.Err()
}

// ListStats counts a list's live entities and those in conflict, and says
// when the last was made.
func (s *Entities) ListStats(ctx context.Context, listID int64) (entities, conflicts int, last *time.Time, err error) {
	var lastMS sql.NullInt64
	err = s.DB.read.QueryRowContext(ctx, `SELECT count(*), count(conflict), max(created_at) FROM entities WHERE list_id = ? AND deleted_at IS NULL`, listID).
		Scan(&entities, &conflicts, &lastMS)
	return entities, conflicts, fromNullMS(lastMS), err
}

// versionSeal is what a version keeps sealed.
type versionSeal struct {
	Label    string            `json:"l"`
	Data     map[string]string `json:"d"`
	Received map[string]string `json:"r"`
}

func versionAAD(listID int64, uuid string, version int64) string {
	return fmt.Sprintf("entity %d %s %d", listID, uuid, version)
}

// entityKey returns the key an entity's versions are sealed under.
func (s *Entities) entityKey(ctx context.Context, projectID, slot int64) (sealer, error) {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return nil, err
	}
	return s.Keys.SubmissionKey(pk, slot)
}

const entityColumns = `e.id, e.list_id, e.uuid, e.key_slot, e.version, e.conflict, e.creator_id, e.created_at, e.updated_at, e.deleted_at`

func scanEntity(row interface{ Scan(...any) error }) (*haven.Entity, error) {
	e := &haven.Entity{}
	var conflict sql.NullString
	var created int64
	var updated, deleted sql.NullInt64
	if err := row.Scan(&e.ID, &e.ListID, &e.UUID, &e.KeySlot, &e.Version, &conflict, &e.CreatorID, &created, &updated, &deleted); err != nil {
		return nil, err
	}
	if conflict.Valid {
		e.Conflict = &conflict.String
	}
	e.CreatedAt, e.UpdatedAt, e.DeletedAt = fromMS(created), fromNullMS(updated), fromNullMS(deleted)
	return e, nil
}

const entityVersionColumns = `v.version, v.base_version, v.trunk_version, v.branch_id, v.branch_base_version, v.conflicting, v.sealed,
	v.source, v.submission_id, v.creator_id, v.created_at, (SELECT s.instance_id FROM submissions s WHERE s.id = v.submission_id)`

func scanVersionRow(row interface{ Scan(...any) error }) (*haven.EntityVersion, []byte, error) {
	v := &haven.EntityVersion{}
	var base, trunk, branchBase, subID sql.NullInt64
	var branch, conflicting, instance sql.NullString
	var sealed []byte
	var created int64
	if err := row.Scan(&v.Version, &base, &trunk, &branch, &branchBase, &conflicting, &sealed, &v.Source, &subID, &v.CreatorID, &created, &instance); err != nil {
		return nil, nil, err
	}
	v.BaseVersion, v.TrunkVersion, v.BranchBaseVersion = nullInt(base), nullInt(trunk), nullInt(branchBase)
	if branch.Valid {
		v.BranchID = &branch.String
	}
	v.ConflictingProperties = []string{}
	if conflicting.Valid && conflicting.String != "" {
		json.Unmarshal([]byte(conflicting.String), &v.ConflictingProperties)
	}
	v.SubmissionID, v.InstanceID, v.CreatedAt = subID.Int64, instance.String, fromMS(created)
	return v, sealed, nil
}

func nullInt(v sql.NullInt64) *int64 {
	if !v.Valid {
		return nil
	}
	n := v.Int64
	return &n
}

// openVersion fills in a version's label and values from its sealed column.
func openVersion(v *haven.EntityVersion, key sealer, listID int64, uuid string, sealed []byte) error {
	b, err := key.Open(sealed, versionAAD(listID, uuid, v.Version))
	if err != nil {
		return err
	}
	var vs versionSeal
	if err := json.Unmarshal(b, &vs); err != nil {
		return err
	}
	v.Label, v.Data, v.Received = vs.Label, vs.Data, vs.Received
	if v.Data == nil {
		v.Data = map[string]string{}
	}
	if v.Received == nil {
		v.Received = map[string]string{}
	}
	return nil
}

// Get returns an entity of a list with its current version; a deleted
// one (a tombstone, with no version) only when deleted is set.
func (s *Entities) Get(ctx context.Context, list *haven.EntityList, uuid string, deleted bool) (*haven.Entity, error) {
	e, err := scanEntity(s.DB.read.QueryRowContext(ctx, `SELECT `+entityColumns+` FROM entities e WHERE e.list_id = ? AND e.uuid = ?`, list.ID, uuid))
	if errors.Is(err, sql.ErrNoRows) || err == nil && e.DeletedAt != nil && !deleted {
		return nil, haven.Errorf(haven.ENOTFOUND, "The entity %s could not be found in the list %q.", uuid, list.Name)
	} else if err != nil {
		return nil, err
	}
	if e.DeletedAt != nil {
		return e, nil
	}
	return e, s.fillCurrent(ctx, list, e)
}

func (s *Entities) fillCurrent(ctx context.Context, list *haven.EntityList, e *haven.Entity) error {
	v, sealed, err := scanVersionRow(s.DB.read.QueryRowContext(ctx, `SELECT `+entityVersionColumns+` FROM entity_versions v WHERE v.entity_id = ? AND v.version = ?`, e.ID, e.Version))
	if err != nil {
		return err
	}
	key, err := s.entityKey(ctx, list.ProjectID, e.KeySlot)
	if err != nil {
		return err
	}
	if err := openVersion(v, key, list.ID, e.UUID, sealed); err != nil {
		return err
	}
	v.Current, v.Conflict = true, e.Conflict
	e.Current = *v
	return nil
}

// Each calls fn with every live entity of a list (current version filled
// in), oldest first; with deleted set, tombstones too (no version).
func (s *Entities) Each(ctx context.Context, list *haven.EntityList, deleted bool, fn func(*haven.Entity) error) error {
	q := `SELECT ` + entityColumns + `, ` + entityVersionColumns + ` FROM entities e LEFT JOIN entity_versions v ON v.entity_id = e.id AND v.version = e.version
		WHERE e.list_id = ?`
	if !deleted {
		q += ` AND e.deleted_at IS NULL`
	}
	rows, err := s.DB.read.QueryContext(ctx, q+` ORDER BY e.id`, list.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	pk, err := s.Keys.ProjectKey(ctx, list.ProjectID)
	if err != nil {
		return err
	}
	for rows.Next() {
		e := &haven.Entity{}
		v := &haven.EntityVersion{}
		var conflict sql.NullString
		var created int64
		var updated, deletedAt sql.NullInt64
		var vVersion, base, trunk, branchBase, subID, creator, vCreated sql.NullInt64
		var branch, conflicting, source, instance sql.NullString
		var sealed []byte
		if err := rows.Scan(&e.ID, &e.ListID, &e.UUID, &e.KeySlot, &e.Version, &conflict, &e.CreatorID, &created, &updated, &deletedAt,
			&vVersion, &base, &trunk, &branch, &branchBase, &conflicting, &sealed, &source, &subID, &creator, &vCreated, &instance); err != nil {
			return err
		}
		if conflict.Valid {
			e.Conflict = &conflict.String
		}
		e.CreatedAt, e.UpdatedAt, e.DeletedAt = fromMS(created), fromNullMS(updated), fromNullMS(deletedAt)
		if e.DeletedAt == nil && vVersion.Valid {
			v.Version, v.BaseVersion, v.TrunkVersion, v.BranchBaseVersion = vVersion.Int64, nullInt(base), nullInt(trunk), nullInt(branchBase)
			if branch.Valid {
				v.BranchID = &branch.String
			}
			v.ConflictingProperties = []string{}
			if conflicting.Valid && conflicting.String != "" {
				json.Unmarshal([]byte(conflicting.String), &v.ConflictingProperties)
			}
			v.Source, v.SubmissionID, v.InstanceID, v.CreatorID, v.CreatedAt = source.String, subID.Int64, instance.String, creator.Int64, fromMS(vCreated.Int64)
			key, err := s.Keys.SubmissionKey(pk, e.KeySlot)
			if err != nil {
				return err
			}
			if err := openVersion(v, key, list.ID, e.UUID, sealed); err != nil {
				return err
			}
			v.Current, v.Conflict = true, e.Conflict
			e.Current = *v
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Versions returns every version of an entity, oldest first.
func (s *Entities) Versions(ctx context.Context, list *haven.EntityList, e *haven.Entity) ([]haven.EntityVersion, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT `+entityVersionColumns+` FROM entity_versions v WHERE v.entity_id = ? ORDER BY v.version`, e.ID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	key, err := s.entityKey(ctx, list.ProjectID, e.KeySlot)
	if err != nil {
		return nil, err
	}
	var out []haven.EntityVersion
	for rows.Next() {
		v, sealed, err := scanVersionRow(rows)
		if err != nil {
			return nil, err
		}
		if err := openVersion(v, key, list.ID, e.UUID, sealed); err != nil {
			return nil, err
		}
		v.Current = v.Version == e.Version
		if v.Current {
			v.Conflict = e.Conflict
		}
		out = append(out, *v)
	}
	return out, rows.Err()
}

// Deleted lists the uuids of a list's deleted entities among ids (for
// Collect's integrity check).
func (s *Entities) Deleted(ctx context.Context, list *haven.EntityList, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, id := range ids {
		var del sql.NullInt64
		err := s.DB.read.QueryRowContext(ctx, `SELECT deleted_at FROM entities WHERE list_id = ? AND uuid = ?`, list.ID, id).Scan(&del)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		} else if err != nil {
			return nil, err
		}
		out[id] = del.Valid
	}
	return out, nil
}

// Source says where a change of entities comes from.
type Source struct {
	Kind                string // "submission" or "api"
	SubmissionID        int64
	SubmissionVersionID int64
	FormVersionID       int64
	ActorID             int64
	Trigger             string // for submissions: "submission" or "approval"
	Force               bool   // applied out of order: its offline predecessor never came
}

// Outcome is what became of one op.
type Outcome struct {
	Op     haven.EntityOp
	Action string // "create", "update", "held", "skipped", "error"
	Entity *haven.Entity
	Err    error
}

// errHold stops an op that must wait for an earlier offline version.
var errHold = errors.New("held for an earlier offline version")

// apply runs one op within tx.
func (s *Entities) apply(tx *Tx, pk *ProjectKey, list *haven.EntityList, op haven.EntityOp, src Source) (*haven.Entity, string, error) {
	if op.Update {
		e, err := s.update(tx, pk, list, op, src, false)
		if err == nil || errors.Is(err, errHold) {
			return e, "update", err
		}
		if haven.ErrorCode(err) == haven.ENOTFOUND && errors.Is(err, errNoEntity) && (op.Create || src.Force) {
			e, err := s.create(tx, pk, list, op, src)
			return e, "create", err
		}
		return nil, "", err
	}
	e, err := s.create(tx, pk, list, op, src)
	if haven.ErrorCode(err) == haven.ECONFLICT && errors.Is(err, errEntityExists) {
		// An offline update processed out of order made the entity first:
		// this create then applies as an update of it.
		var source string
		var deleted sql.NullInt64
		if qerr := tx.QueryRow(`SELECT v.source, e.deleted_at FROM entities e JOIN entity_versions v ON v.entity_id = e.id
			WHERE e.list_id = ? AND e.uuid = ? AND v.version = 1`, list.ID, op.UUID).Scan(&source, &deleted); qerr == nil && source == "forced" && !deleted.Valid {
			e, err := s.update(tx, pk, list, op, src, true)
			return e, "update", err
		}
	}
	return e, "create", err
}

var (
	errNoEntity     = errors.New("no such entity")
	errEntityExists = errors.New("entity exists")
)

func (s *Entities) create(tx *Tx, pk *ProjectKey, list *haven.EntityList, op haven.EntityOp, src Source) (*haven.Entity, error) {
	var n int
	var deleted sql.NullInt64
	err := tx.QueryRow(`SELECT count(*), max(deleted_at) FROM entities WHERE list_id = ? AND uuid = ?`, list.ID, op.UUID).Scan(&n, &deleted)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		if deleted.Valid {
			return nil, &haven.Error{Code: haven.ECONFLICT, Err: errEntityExists, Message: fmt.Sprintf("The entity %s was deleted or erased; it is not made again.", op.UUID)}
		}
		return nil, &haven.Error{Code: haven.ECONFLICT, Err: errEntityExists, Message: fmt.Sprintf("An entity with the uuid %s already exists in the list %q.", op.UUID, list.Name)}
	}
	label := op.Label
	if strings.TrimSpace(label) == "" {
		if !src.Force {
			return nil, haven.Errorf(haven.EINVALID, "The entity %s has no label: the form must give each entity a label.", op.UUID)
		}
		label = "auto generated"
	}
	key, err := s.Keys.newSubmissionKey(tx, pk)
	if err != nil {
		return nil, err
	}
	e := &haven.Entity{ListID: list.ID, UUID: op.UUID, KeySlot: key.Slot, Version: 1, CreatorID: src.ActorID, CreatedAt: tx.Now().Truncate(time.Millisecond).UTC()}
	if err := tx.Insert(&e.ID, `INSERT INTO entities (list_id, uuid, key_slot, version, creator_id, created_at) VALUES (?, ?, ?, 1, ?, ?)`,
		list.ID, op.UUID, key.Slot, src.ActorID, ms(e.CreatedAt)); err != nil {
		return nil, err
	}
	if err := tx.touchList(list.ID); err != nil {
		return nil, err
	}
	data := map[string]string{}
	maps.Copy(data, op.Values)
	v := haven.EntityVersion{Version: 1, Label: label, Data: data, Received: op.Values, CreatorID: src.ActorID, CreatedAt: e.CreatedAt, Current: true,
		ConflictingProperties: []string{}}
	if op.BranchID != "" {
		v.BranchID = &op.BranchID
		if src.Force && op.BaseVersion > 0 {
			v.BranchBaseVersion = &op.BaseVersion
		}
	}
	source := src.Kind
	if src.Force {
		source = "forced"
	}
	if err := s.insertVersion(tx, key, list, e, &v, source, src, nil); err != nil {
		return nil, err
	}
	e.Current = v
	return e, nil
}

func (s *Entities) insertVersion(tx *Tx, key sealer, list *haven.EntityList, e *haven.Entity, v *haven.EntityVersion, source string, src Source, conflicting []string) error {
	sealedJSON, err := json.Marshal(versionSeal{Label: v.Label, Data: v.Data, Received: v.Received})
	if err != nil {
		return err
	}
	var conf any
	if conflicting != nil {
		b, _ := json.Marshal(conflicting)
		conf = string(b)
	}
	var sub, subVersion any
	if src.SubmissionID != 0 {
		sub, subVersion = src.SubmissionID, src.SubmissionVersionID
	}
	_, err = tx.Exec(`INSERT INTO entity_versions (entity_id, version, base_version, trunk_version, branch_id, branch_base_version, conflicting,
		sealed, source, submission_id, submission_version_id, creator_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, v.Version, v.BaseVersion, v.TrunkVersion, v.BranchID, v.BranchBaseVersion, conf,
		key.Seal(sealedJSON, versionAAD(list.ID, e.UUID, v.Version)), source, sub, subVersion, src.ActorID, ms(v.CreatedAt))
	return err
}

// versionAt reads one version of an entity within tx, opened.
func (tx *Tx) versionAt(key sealer, list *haven.EntityList, e *haven.Entity, where string, args ...any) (*haven.EntityVersion, error) {
	v, sealed, err := scanVersionRow(tx.QueryRow(`SELECT `+entityVersionColumns+` FROM entity_versions v WHERE v.entity_id = ? AND `+where,
		append([]any{e.ID}, args...)...))
	if err != nil {
		return nil, err
	}
	return v, openVersion(v, key, list.ID, e.UUID, sealed)
}

// update applies an update op as Central does: from the version it was
// made from (baseVersion, or for an offline branch the version its branch
// last reached), recording a soft or hard conflict when the server took
// other updates since. An offline update whose predecessor in its branch
// has not arrived is held (errHold), unless src.Force.
func (s *Entities) update(tx *Tx, pk *ProjectKey, list *haven.EntityList, op haven.EntityOp, src Source, createAsUpdate bool) (*haven.Entity, error) {
	e, err := scanEntity(tx.QueryRow(`SELECT `+entityColumns+` FROM entities e WHERE e.list_id = ? AND e.uuid = ?`, list.ID, op.UUID))
	if errors.Is(err, sql.ErrNoRows) {
		if op.BranchID != "" && !src.Force && !op.Create {
			return nil, errHold // an offline create of it may still come
		}
		return nil, &haven.Error{Code: haven.ENOTFOUND, Err: errNoEntity, Message: fmt.Sprintf("The entity %s to update is not in the list %q.", op.UUID, list.Name)}
	} else if err != nil {
		return nil, err
	}
	if e.DeletedAt != nil {
		return nil, haven.Errorf(haven.ECONFLICT, "The entity %s was deleted or erased; the update was not applied.", op.UUID)
	}
	key, err := s.Keys.SubmissionKey(pk, e.KeySlot)
	if err != nil {
		return nil, err
	}
	current, err := tx.versionAt(key, list, e, `v.version = ?`, e.Version)
	if err != nil {
		return nil, err
	}
	var base *haven.EntityVersion
	switch {
	case createAsUpdate || src.Kind == "api" && op.BaseVersion == 0:
		base = current
	case op.BranchID == "":
		base, err = tx.versionAt(key, list, e, `v.version = ?`, op.BaseVersion)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, haven.Errorf(haven.ENOTFOUND, "The entity %s has no version %d to update from.", op.UUID, op.BaseVersion)
		}
	default:
		switch {
		case op.BaseVersion == 1:
			base, err = tx.versionAt(key, list, e, `v.version = 1`)
		case op.BaseVersion == op.TrunkVersion:
			base, err = tx.versionAt(key, list, e, `v.version = ?`, op.BaseVersion)
		default:
			base, err = tx.versionAt(key, list, e, `v.branch_id = ? AND v.branch_base_version = ?`, op.BranchID, op.BaseVersion-1)
		}
		if errors.Is(err, sql.ErrNoRows) {
			if !src.Force {
				return nil, errHold
			}
			base, err = current, nil
		}
	}
	if err != nil {
		return nil, err
	}
	if op.TrunkVersion > e.Version {
		return nil, haven.Errorf(haven.ENOTFOUND, "The entity %s has no version %d (the update's trunkVersion).", op.UUID, op.TrunkVersion)
	}
	conflict := ""
	if e.Conflict != nil {
		conflict = *e.Conflict
	}
	var conflicting []string
	raise := func(props []string) {
		if conflict != haven.ConflictHard {
			conflict = haven.ConflictSoft
			if len(props) > 0 {
				conflict = haven.ConflictHard
			}
		}
	}
	received := map[string]string{}
	maps.Copy(received, op.Values)
	if op.HasLabel {
		received["label"] = op.Label
	}
	switch {
	case base.Version != current.Version || createAsUpdate:
		from := base
		if createAsUpdate {
			from = &haven.EntityVersion{Data: op.Values, Label: op.Label}
		}
		// What the server changed since the base, against what this update sets.
		changed := map[string]string{}
		for k, v := range current.Data {
			if from.Data[k] != v {
				changed[k] = v
			}
		}
		if current.Label != from.Label {
			changed["label"] = current.Label
		}
		conflicting = []string{}
		for k, v := range received {
			if c, ok := changed[k]; ok && c != v {
				conflicting = append(conflicting, k)
			}
		}
		slices.Sort(conflicting)
		raise(conflicting)
	case op.BranchID != "":
		// An offline branch interrupted by a version from elsewhere.
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM entity_versions WHERE entity_id = ? AND version > ? AND (branch_id IS NULL OR branch_id <> ?)`,
			e.ID, max(op.TrunkVersion, 1), op.BranchID).Scan(&n); err != nil {
			return nil, err
		}
		if n > 0 {
			raise(nil)
		}
	}
	data := maps.Clone(current.Data)
	maps.Copy(data, op.Values)
	label := current.Label
	if op.HasLabel {
		label = op.Label
	}
	v := haven.EntityVersion{Version: e.Version + 1, Label: label, Data: data, Received: op.Values, CreatorID: src.ActorID,
		CreatedAt: tx.Now().Truncate(time.Millisecond).UTC(), Current: true, ConflictingProperties: conflicting}
	bv := base.Version
	v.BaseVersion = &bv
	if op.BranchID != "" {
		v.BranchID = &op.BranchID
		bb := op.BaseVersion
		v.BranchBaseVersion = &bb
		if op.TrunkVersion > 0 {
			tv := op.TrunkVersion
			v.TrunkVersion = &tv
		}
	}
	if v.ConflictingProperties == nil {
		v.ConflictingProperties = []string{}
	}
	if err := s.insertVersion(tx, key, list, e, &v, src.Kind, src, conflicting); err != nil {
		return nil, err
	}
	var conf any
	if conflict != "" {
		conf = conflict
		e.Conflict = &conflict
	}
	now := v.CreatedAt
	if _, err := tx.Exec(`UPDATE entities SET version = ?, conflict = ?, updated_at = ? WHERE id = ?`, v.Version, conf, ms(now), e.ID); err != nil {
		return nil, err
	}
	if err := tx.touchList(list.ID); err != nil {
		return nil, err
	}
	e.Version, e.UpdatedAt = v.Version, &now
	v.Conflict = e.Conflict
	e.Current = v
	return e, nil
}

// APIChange is an entity made or changed over the API.
type APIChange struct {
	UUID        string
	Label       *string
	Data        map[string]string
	BaseVersion int64 // 0 with Force: update whatever the current version is
	Force       bool
	Resolve     bool // mark the entity's conflict resolved
}

// CreateEntities makes entities over the API, all or none, with one audit
// event each.
func (s *Entities) CreateEntities(ctx context.Context, list *haven.EntityList, changes []APIChange, actorID int64, audit func(e *haven.Entity) *haven.AuditEvent) ([]*haven.Entity, error) {
	pk, err := s.Keys.ProjectKey(ctx, list.ProjectID)
	if err != nil {
		return nil, err
	}
	var out []*haven.Entity
	err = s.DB.Write(ctx, func(tx *Tx) error {
		out = out[:0]
		for _, c := range changes {
			op := haven.EntityOp{Dataset: list.Name, UUID: c.UUID, Create: true, Values: c.Data}
			if c.Label != nil {
				op.Label, op.HasLabel = *c.Label, true
			}
			e, err := s.create(tx, pk, list, op, Source{Kind: "api", ActorID: actorID})
			if err != nil {
				return err
			}
			if err := s.audit(tx, audit(e)); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// UpdateEntity changes an entity over the API: from BaseVersion (a
// conflict is refused, as Central refuses it), or whatever the current
// version with Force; Resolve clears a conflict.
func (s *Entities) UpdateEntity(ctx context.Context, list *haven.EntityList, c APIChange, actorID int64, audit *haven.AuditEvent) (*haven.Entity, error) {
	pk, err := s.Keys.ProjectKey(ctx, list.ProjectID)
	if err != nil {
		return nil, err
	}
	var out *haven.Entity
	err = s.DB.Write(ctx, func(tx *Tx) error {
		var version int64
		var deleted sql.NullInt64
		err := tx.QueryRow(`SELECT version, deleted_at FROM entities WHERE list_id = ? AND uuid = ?`, list.ID, c.UUID).Scan(&version, &deleted)
		if errors.Is(err, sql.ErrNoRows) || err == nil && deleted.Valid {
			return haven.Errorf(haven.ENOTFOUND, "The entity %s could not be found in the list %q.", c.UUID, list.Name)
		} else if err != nil {
			return err
		}
		if !c.Force && c.BaseVersion != version {
			return haven.Errorf(haven.ECONFLICT, "The entity %s is at version %d, not %d: read it again and send its current version as baseVersion (or force=true).", c.UUID, version, c.BaseVersion)
		}
		if c.Label != nil || len(c.Data) > 0 {
			op := haven.EntityOp{Dataset: list.Name, UUID: c.UUID, Update: true, Values: c.Data, BaseVersion: version}
			if op.Values == nil {
				op.Values = map[string]string{}
			}
			if c.Label != nil {
				op.Label, op.HasLabel = *c.Label, true
			}
			if _, err := s.update(tx, pk, list, op, Source{Kind: "api", ActorID: actorID}, false); err != nil {
				return err
			}
		}
		if c.Resolve {
			if _, err := tx.Exec(`UPDATE entities SET conflict = NULL, updated_at = ? WHERE list_id = ? AND uuid = ?`, ms(tx.Now()), list.ID, c.UUID); err != nil {
				return err
			}
		}
		return s.audit(tx, audit)
	})
	if err != nil {
		return nil, err
	}
	out, err = s.Get(ctx, list, c.UUID, false)
	return out, err
}

// DeleteEntity erases an entity: its versions go, its key is zeroed, and
// a tombstone keeps its uuid so that devices drop it and nothing makes
// it again.
func (s *Entities) DeleteEntity(ctx context.Context, list *haven.EntityList, uuid string, audit *haven.AuditEvent) error {
	var slot int64
	err := s.DB.Write(ctx, func(tx *Tx) error {
		var id int64
		var deleted sql.NullInt64
		err := tx.QueryRow(`SELECT id, key_slot, deleted_at FROM entities WHERE list_id = ? AND uuid = ?`, list.ID, uuid).Scan(&id, &slot, &deleted)
		if errors.Is(err, sql.ErrNoRows) || err == nil && deleted.Valid {
			return haven.Errorf(haven.ENOTFOUND, "The entity %s could not be found in the list %q.", uuid, list.Name)
		} else if err != nil {
			return err
		}
		if err := tx.eraseEntity(list.ProjectID, id, slot); err != nil {
			return err
		}
		return s.audit(tx, audit)
	})
	if err != nil {
		return err
	}
	pk, err := s.Keys.ProjectKey(ctx, list.ProjectID)
	if err != nil {
		return err
	}
	return s.Keys.DestroySubmissionKeys(pk, slot)
}

// eraseEntity deletes an entity's versions, leaves its tombstone and
// lists its key slot for zeroing once tx commits.
func (tx *Tx) eraseEntity(projectID, id, slot int64) error {
	if _, err := tx.Exec(`DELETE FROM entity_versions WHERE entity_id = ?`, id); err != nil {
		return err
	}
	if _, err := tx.Exec(`UPDATE entities SET deleted_at = ?, conflict = NULL WHERE id = ?`, ms(tx.Now()), id); err != nil {
		return err
	}
	if _, err := tx.Exec(`UPDATE entity_lists SET changes = changes + 1 WHERE id = (SELECT list_id FROM entities WHERE id = ?)`, id); err != nil {
		return err
	}
	_, err := tx.Exec(`INSERT INTO key_slot_erasures (project_key_id, slot)
		SELECT id, ? FROM project_keys WHERE project_id = ? AND destroyed_at IS NULL ON CONFLICT DO NOTHING`, slot, projectID)
	return err
}

// eraseEntitiesOf erases, within tx, the entities a submission made or
// changed: what it told about them cannot be told apart from the rest once
// merged, so the entity goes with it. It returns their key slots.
func (tx *Tx) eraseEntitiesOf(projectID, submissionID int64) ([]int64, error) {
	rows, err := tx.Query(`SELECT DISTINCT e.id, e.key_slot FROM entities e JOIN entity_versions v ON v.entity_id = e.id WHERE v.submission_id = ?`, submissionID)
	if err != nil {
		return nil, err
	}
	type ent struct{ id, slot int64 }
	var all []ent
	for rows.Next() {
		var x ent
		if err := rows.Scan(&x.id, &x.slot); err != nil {
			rows.Close()
			return nil, err
		}
		all = append(all, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var slots []int64
	for _, x := range all {
		if err := tx.eraseEntity(projectID, x.id, x.slot); err != nil {
			return nil, err
		}
		slots = append(slots, x.slot)
	}
	_, err = tx.Exec(`DELETE FROM entity_queue WHERE submission_version_id IN (SELECT id FROM submission_versions WHERE submission_id = ?)`, submissionID)
	return slots, err
}

// QueueItem is a submission whose entity blocks are still to apply.
type QueueItem struct {
	ID                  int64
	ProjectID           int64
	SubmissionVersionID int64
	Trigger             string
	ActorID             int64
	QueuedAt            time.Time
	Held                bool
}

// Queue lists what is ready to apply, oldest first: items not held, and
// held ones queued before heldBefore (their predecessor never came: they
// are applied anyway, as Central does after five days).
func (s *Entities) Queue(ctx context.Context, heldBefore time.Time, limit int) ([]QueueItem, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT id, project_id, submission_version_id, trigger, actor_id, queued_at, held_uuid IS NOT NULL
		FROM entity_queue WHERE held_uuid IS NULL OR queued_at < ? ORDER BY id LIMIT ?`, ms(heldBefore), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []QueueItem
	for rows.Next() {
		var q QueueItem
		var at int64
		if err := rows.Scan(&q.ID, &q.ProjectID, &q.SubmissionVersionID, &q.Trigger, &q.ActorID, &at, &q.Held); err != nil {
			return nil, err
		}
		q.QueuedAt = fromMS(at)
		out = append(out, q)
	}
	return out, rows.Err()
}

// QueuedSubmission is the submission version a queue item names.
type QueuedSubmission struct {
	Version       haven.SubmissionVersion
	FormID        int64
	XMLFormID     string
	ReviewState   string
	FormVersionID int64
}

// Queued finds the submission version of a queue item; nil when it is gone.
func (s *Entities) Queued(ctx context.Context, q QueueItem) (*QueuedSubmission, error) {
	out := &QueuedSubmission{}
	var review sql.NullString
	err := s.DB.read.QueryRowContext(ctx, `SELECT v.id, v.submission_id, v.form_version_id, v.instance_id, s.form_id, f.xml_form_id, s.review_state
		FROM submission_versions v JOIN submissions s ON s.id = v.submission_id JOIN forms f ON f.id = s.form_id WHERE v.id = ?`, q.SubmissionVersionID).
		Scan(&out.Version.ID, &out.Version.SubmissionID, &out.Version.FormVersionID, &out.Version.InstanceID, &out.FormID, &out.XMLFormID, &review)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	out.ReviewState, out.FormVersionID = review.String, out.Version.FormVersionID
	return out, err
}

// Drop forgets a queue item whose submission is gone.
func (s *Entities) Drop(ctx context.Context, q QueueItem) error {
	return s.DB.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`DELETE FROM entity_queue WHERE id = ?`, q.ID)
		return err
	})
}

// ApplySubmission applies a queued submission's ops in one transaction,
// with an audit event for each entity made, changed, held or refused, and
// takes the item off the queue (or holds it). Ops already applied from
// the same submission version (before a hold) are skipped.
func (s *Entities) ApplySubmission(ctx context.Context, q QueueItem, sub *QueuedSubmission, ops []haven.EntityOp, event func(o Outcome) *haven.AuditEvent) ([]Outcome, error) {
	pk, err := s.Keys.ProjectKey(ctx, q.ProjectID)
	if err != nil {
		return nil, err
	}
	var outcomes []Outcome
	err = s.DB.Write(ctx, func(tx *Tx) error {
		src := Source{Kind: "submission", SubmissionID: sub.Version.SubmissionID, SubmissionVersionID: sub.Version.ID,
			FormVersionID: sub.FormVersionID, ActorID: q.ActorID, Trigger: q.Trigger, Force: q.Held}
		var held *haven.EntityOp
		var err error
		if outcomes, held, err = s.applyOps(tx, pk, q, src, ops, event); err != nil {
			return err
		}
		if held != nil {
			_, err := tx.Exec(`UPDATE entity_queue SET held_uuid = ?, held_branch = ?, held_base = ? WHERE id = ?`,
				held.UUID, held.BranchID, held.BaseVersion, q.ID)
			return err
		}
		_, err = tx.Exec(`DELETE FROM entity_queue WHERE id = ?`, q.ID)
		return err
	})
	return outcomes, err
}

// applyOps applies a submission's ops in order within tx, with an audit
// event for each, until one must wait for an earlier offline version
// (held, returned). An op that fails alone is its outcome; only what
// would break the store fails the transaction.
func (s *Entities) applyOps(tx *Tx, pk *ProjectKey, q QueueItem, src Source, ops []haven.EntityOp, event func(o Outcome) *haven.AuditEvent) ([]Outcome, *haven.EntityOp, error) {
	var outcomes []Outcome
	for i, op := range ops {
		o := s.applyOne(tx, pk, q, src, op)
		if o.Err != nil && haven.ErrorCode(o.Err) == haven.EINTERNAL {
			return nil, nil, o.Err
		}
		if o.Action != "skipped" && event != nil {
			if err := s.audit(tx, event(o)); err != nil {
				return nil, nil, err
			}
		}
		outcomes = append(outcomes, o)
		if o.Action == "held" {
			return outcomes, &ops[i], nil
		}
		if o.Entity != nil && (o.Action == "create" || o.Action == "update") {
			if err := tx.releaseNext(o.Entity); err != nil {
				return nil, nil, err
			}
		}
	}
	return outcomes, nil, nil
}

// applyIngested applies a new submission's ops in the transaction that
// stores it (the ids it just got); what must wait is queued, held.
func (tx *Tx) applyIngested(s *Submissions, pk *ProjectKey, in *Incoming, submissionID, versionID int64) error {
	es := &Entities{DB: s.DB, Keys: s.Keys, Audit: s.Audit}
	q := QueueItem{ProjectID: in.ProjectID, SubmissionVersionID: versionID, Trigger: "submission", ActorID: in.SubmitterID}
	src := Source{Kind: "submission", SubmissionID: submissionID, SubmissionVersionID: versionID, FormVersionID: in.FormVersionID,
		ActorID: in.SubmitterID, Trigger: "submission"}
	_, held, err := es.applyOps(tx, pk, q, src, in.EntityOps, in.EntityEvent)
	if err != nil || held == nil {
		return err
	}
	_, err = tx.Exec(`INSERT INTO entity_queue (project_id, submission_version_id, trigger, actor_id, queued_at, held_uuid, held_branch, held_base)
		VALUES (?, ?, 'submission', ?, ?, ?, ?, ?) ON CONFLICT (submission_version_id, trigger) DO NOTHING`,
		in.ProjectID, versionID, in.SubmitterID, ms(tx.Now()), held.UUID, held.BranchID, held.BaseVersion)
	return err
}

// applyOne applies one op; what goes wrong with the op itself is its
// outcome (an audit event), not a failure of the transaction.
func (s *Entities) applyOne(tx *Tx, pk *ProjectKey, q QueueItem, src Source, op haven.EntityOp) Outcome {
	o := Outcome{Op: op}
	if !op.Create && !op.Update {
		o.Action = "skipped"
		return o
	}
	if op.Problem != "" {
		o.Action, o.Err = "error", haven.Errorf(haven.EINVALID, "%s", op.Problem)
		return o
	}
	list, err := scanList(tx.QueryRow(`SELECT `+listColumns+` FROM entity_lists WHERE project_id = ? AND name = ?`, q.ProjectID, op.Dataset))
	if errors.Is(err, sql.ErrNoRows) {
		o.Action, o.Err = "error", haven.Errorf(haven.ENOTFOUND, "The entity list %q does not exist in this project.", op.Dataset)
		return o
	} else if err != nil {
		o.Action, o.Err = "error", err
		return o
	}
	// Approval: a list that needs it makes entities when their submission
	// is approved; updates apply when they arrive, as in Central.
	onlyCreate := op.Create && !op.Update
	if q.Trigger == "edit" {
		return s.applyEdit(tx, pk, list, op, src)
	}
	switch {
	case q.Trigger == "approval" && !(list.ApprovalRequired && op.Create):
		o.Action = "skipped"
		return o
	case q.Trigger == "submission" && list.ApprovalRequired && onlyCreate:
		o.Action = "skipped"
		return o
	}
	var done int
	if err := tx.QueryRow(`SELECT count(*) FROM entity_versions v JOIN entities e ON e.id = v.entity_id
		WHERE v.submission_version_id = ? AND e.list_id = ? AND e.uuid = ?`, src.SubmissionVersionID, list.ID, op.UUID).Scan(&done); err != nil {
		o.Action, o.Err = "error", err
		return o
	}
	if done > 0 {
		o.Action = "skipped"
		return o
	}
	var actions string
	err = tx.QueryRow(`SELECT actions FROM entity_list_forms WHERE list_id = ? AND form_version_id = ?`, list.ID, src.FormVersionID).Scan(&actions)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		o.Action, o.Err = "error", err
		return o
	}
	for _, a := range []struct {
		want bool
		name string
	}{{op.Create, "create"}, {op.Update, "update"}} {
		if a.want && !slices.Contains(strings.Split(actions, ","), a.name) {
			o.Action, o.Err = "error", haven.Errorf(haven.EFORBIDDEN, "The form may not %s entities of the list %q.", a.name, list.Name)
			return o
		}
	}
	// Each op runs under a savepoint: a refused op leaves nothing.
	if _, err := tx.Exec(`SAVEPOINT entity_op`); err != nil {
		o.Action, o.Err = "error", err
		return o
	}
	e, action, err := s.apply(tx, pk, list, op, src)
	switch {
	case errors.Is(err, errHold):
		tx.Exec(`ROLLBACK TO SAVEPOINT entity_op`)
		o.Action = "held"
	case err != nil:
		tx.Exec(`ROLLBACK TO SAVEPOINT entity_op`)
		o.Action, o.Err = "error", err
		if he := (*haven.Error)(nil); !errors.As(err, &he) {
			o.Err = &haven.Error{Code: haven.EINTERNAL, Err: err, Message: "The entity could not be stored."}
		}
	default:
		o.Action, o.Entity = action, e
	}
	tx.Exec(`RELEASE SAVEPOINT entity_op`)
	return o
}

// releaseNext frees the held submission that continues e's offline branch.
func (tx *Tx) releaseNext(e *haven.Entity) error {
	v := e.Current
	var err error
	if v.BranchID == nil {
		_, err = tx.Exec(`UPDATE entity_queue SET held_uuid = NULL, held_branch = NULL, held_base = NULL WHERE held_uuid = ? AND held_base = 1`, e.UUID)
	} else {
		base := int64(0)
		if v.BranchBaseVersion != nil {
			base = *v.BranchBaseVersion
		}
		_, err = tx.Exec(`UPDATE entity_queue SET held_uuid = NULL, held_branch = NULL, held_base = NULL WHERE held_uuid = ? AND held_branch = ? AND held_base = ?`,
			e.UUID, *v.BranchID, base+1)
	}
	return err
}

// queueApproval queues an approved submission's entity blocks for lists
// that make entities on approval, when its form saves to entity lists.
func (tx *Tx) queueApproval(submissionID, actorID int64) error {
	_, err := tx.Exec(`INSERT INTO entity_queue (project_id, submission_version_id, trigger, actor_id, queued_at)
		SELECT f.project_id, v.id, 'approval', ?, ? FROM submission_versions v JOIN submissions s ON s.id = v.submission_id
		JOIN forms f ON f.id = s.form_id
		WHERE v.submission_id = ? AND v.current = 1 AND EXISTS (SELECT 1 FROM entity_list_forms lf WHERE lf.form_version_id = v.form_version_id)
		ON CONFLICT (submission_version_id, trigger) DO NOTHING`, actorID, ms(tx.Now()), submissionID)
	return err
}

func actorOf(e *haven.AuditEvent) int64 {
	if e == nil {
		return 0
	}
	return e.ActorID
}

// queueSubmission queues a stored submission version's entity blocks:
// trigger is "submission" for a new one, "edit" for an edit.
func (tx *Tx) queueSubmission(projectID, versionID, actorID int64, trigger string) error {
	_, err := tx.Exec(`INSERT INTO entity_queue (project_id, submission_version_id, trigger, actor_id, queued_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (submission_version_id, trigger) DO NOTHING`, projectID, versionID, trigger, actorID, ms(tx.Now()))
	return err
}

// EntityFilter is what one actor's devices get of a list: entities whose
// property holds one of Values.
type EntityFilter struct {
	ActorID  int64    `json:"actorId"`
	Property string   `json:"property"`
	Values   []string `json:"values"`
}

// SetFilter sets (or, with no values, removes) an actor's filter on a list.
func (s *Entities) SetFilter(ctx context.Context, list *haven.EntityList, f EntityFilter, audit *haven.AuditEvent) error {
	return s.DB.Write(ctx, func(tx *Tx) error {
		if len(f.Values) == 0 {
			if _, err := tx.Exec(`DELETE FROM entity_filters WHERE list_id = ? AND actor_id = ?`, list.ID, f.ActorID); err != nil {
				return err
			}
		} else {
			vals, _ := json.Marshal(f.Values)
			if _, err := tx.Exec(`INSERT INTO entity_filters (list_id, actor_id, property, vals) VALUES (?, ?, ?, ?)
				ON CONFLICT (list_id, actor_id) DO UPDATE SET property = excluded.property, vals = excluded.vals`, list.ID, f.ActorID, f.Property, string(vals)); err != nil {
				return err
			}
		}
		return s.audit(tx, audit)
	})
}

// Filters lists a list's filters.
func (s *Entities) Filters(ctx context.Context, list *haven.EntityList) ([]EntityFilter, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT actor_id, property, vals FROM entity_filters WHERE list_id = ? ORDER BY actor_id`, list.ID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []EntityFilter{}
	for rows.Next() {
		var f EntityFilter
		var vals string
		if err := rows.Scan(&f.ActorID, &f.Property, &vals); err != nil {
			return nil, err
		}
		json.Unmarshal([]byte(vals), &f.Values)
		out = append(out, f)
	}
	return out, rows.Err()
}

// FilterOf returns an actor's filter on a list; nil for none.
func (s *Entities) FilterOf(ctx context.Context, list *haven.EntityList, actorID int64) (*EntityFilter, error) {
	f := &EntityFilter{ActorID: actorID}
	var vals string
	err := s.DB.read.QueryRowContext(ctx, `SELECT property, vals FROM entity_filters WHERE list_id = ? AND actor_id = ?`, list.ID, actorID).Scan(&f.Property, &vals)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	return f, json.Unmarshal([]byte(vals), &f.Values)
}

// EntityRef names an entity by its list and uuid.
type EntityRef struct {
	List *haven.EntityList
	UUID string
}

// OfSubmission lists the live entities a submission made or changed.
func (s *Entities) OfSubmission(ctx context.Context, submissionID int64) ([]EntityRef, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT DISTINCT l.id, l.project_id, l.name, l.approval_required, l.created_at, e.uuid
		FROM entity_versions v JOIN entities e ON e.id = v.entity_id JOIN entity_lists l ON l.id = e.list_id
		WHERE v.submission_id = ? AND e.deleted_at IS NULL ORDER BY l.name, e.uuid`, submissionID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []EntityRef
	for rows.Next() {
		l := &haven.EntityList{}
		var approval, created int64
		var r EntityRef
		if err := rows.Scan(&l.ID, &l.ProjectID, &l.Name, &approval, &created, &r.UUID); err != nil {
			return nil, err
		}
		l.ApprovalRequired, l.CreatedAt = approval != 0, fromMS(created)
		r.List = l
		out = append(out, r)
	}
	return out, rows.Err()
}

// Signature changes whenever a list's entities do (one made, changed,
// deleted or erased): what a list made for a device may be kept for as
// long as it stays the same. It reads the database, so it holds across
// nodes.
func (s *Entities) Signature(ctx context.Context, listID int64) (string, error) {
	var n int64
	err := s.DB.read.QueryRowContext(ctx, `SELECT changes FROM entity_lists WHERE id = ?`, listID).Scan(&n)
	return fmt.Sprint(n), err
}

// touchList counts a change of a list's entities, within tx.
func (tx *Tx) touchList(listID int64) error {
	_, err := tx.Exec(`UPDATE entity_lists SET changes = changes + 1 WHERE id = ?`, listID)
	return err
}

// applyEdit applies an op of an edited submission (a correction): the
// entity the submission made or changed takes the edited values, as a
// new version from its current one; an entity the submission never
// reached (or that was erased) is left alone.
func (s *Entities) applyEdit(tx *Tx, pk *ProjectKey, list *haven.EntityList, op haven.EntityOp, src Source) Outcome {
	o := Outcome{Op: op}
	var current int64
	err := tx.QueryRow(`SELECT e.version FROM entities e WHERE e.list_id = ? AND e.uuid = ? AND e.deleted_at IS NULL
		AND EXISTS (SELECT 1 FROM entity_versions v WHERE v.entity_id = e.id AND v.submission_id = ?)`, list.ID, op.UUID, src.SubmissionID).Scan(&current)
	if errors.Is(err, sql.ErrNoRows) {
		o.Action = "skipped"
		return o
	} else if err != nil {
		o.Action, o.Err = "error", err
		return o
	}
	edit := haven.EntityOp{Dataset: op.Dataset, UUID: op.UUID, Update: true, BaseVersion: current, Label: op.Label, HasLabel: op.HasLabel, Values: op.Values}
	if _, err := tx.Exec(`SAVEPOINT entity_op`); err != nil {
		o.Action, o.Err = "error", err
		return o
	}
	e, err := s.update(tx, pk, list, edit, src, false)
	if err != nil {
		tx.Exec(`ROLLBACK TO SAVEPOINT entity_op`)
		o.Action, o.Err = "error", err
	} else {
		o.Action, o.Entity = "update", e
	}
	tx.Exec(`RELEASE SAVEPOINT entity_op`)
	return o
}

// Objected lists the entities of a list that a person who objected to
// the processing of their data is behind: made or changed by a submission
// about them. They stay on the server but no longer go to devices.
func (s *Entities) Objected(ctx context.Context, list *haven.EntityList) (map[string]bool, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT DISTINCT e.uuid FROM entities e JOIN entity_versions v ON v.entity_id = e.id
		JOIN subject_index si ON si.submission_id = v.submission_id
		JOIN subject_objections o ON o.project_id = si.project_id AND o.subject_mac = si.subject_mac
		WHERE e.list_id = ? AND e.deleted_at IS NULL`, list.ID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}
