package app

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/export"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/storage"
)

// Entities: lists of households, patients, water points, followed up
// over time (ODK entities). A form that saves to a list declares it when
// published; each submission's entity blocks are queued in the
// transaction that stores it and applied right after (and by the
// background loop, after a crash or for held offline updates); forms that
// read a list get it as a CSV attachment made for the device asking.
//
// Rights: a list's definition (names, properties, their purpose and tier)
// is form design (form.read, form.write); its entities are collected data
// (submission.read, .update, .delete), and a reader sees a property, or
// the label, only when their clearance covers its tier. A device gets
// only the properties the forms it may fill read, only entities its
// filter lets through, and nothing above its clearance.

// BacklogWait is how long an offline update waits for its predecessor in
// its branch before it is applied anyway, as in Central.
const BacklogWait = 5 * 24 * time.Hour

func objEntityList(projectID int64, name string) string {
	return objProject(projectID) + "/entity-list/" + name
}

func objEntity(projectID int64, name, uuid string) string {
	return objEntityList(projectID, name) + "/entity/" + uuid
}

// declareEntities records the lists a form version saves to, before (or
// as) it is published.
func (s *Service) declareEntities(ctx context.Context, projectID, versionID int64, f *formspec.Form) error {
	byName := map[string]*storage.ListDecl{}
	var order []string
	for _, b := range f.Entities() {
		d := byName[b.Dataset]
		if d == nil {
			d = &storage.ListDecl{Name: b.Dataset}
			byName[b.Dataset] = d
			order = append(order, b.Dataset)
		}
		d.Create = d.Create || b.Create
		d.Update = d.Update || b.Update
		// The label's tier, from the blocks that build one (an update
		// without a label keeps the one it had).
		if f.Node(b.Path+"/label") != nil {
			if t := f.LabelTier(b); d.LabelTier == "" || t.Rank() > d.LabelTier.Rank() {
				d.LabelTier = t
			}
		}
		for _, p := range b.Properties {
			tier, purpose := f.PropertyTier(p)
			d.Properties = append(d.Properties, haven.EntityProperty{Name: p.Name, Purpose: purpose, Sensitivity: tier})
		}
	}
	decls := make([]storage.ListDecl, 0, len(order))
	for _, n := range order {
		decls = append(decls, *byName[n])
	}
	return s.entities.Declare(ctx, projectID, versionID, decls)
}

// entityWorker runs one drain of the queue at a time on this node; a kick
// while one runs makes it look again before it stops.
type entityWorker struct {
	mu      sync.Mutex
	running bool
	again   bool
}

// ApplyEntities applies what the entity queue holds that is ready: every
// item not held, and held ones older than BacklogWait. The submission
// path calls it after storing a submission that saves to a list;
// `haven serve` calls it every minute too (after a crash, and for held
// offline updates whose predecessor never came).
func (s *Service) ApplyEntities(ctx context.Context) error {
	w := &s.entityWork
	w.mu.Lock()
	if w.running {
		w.again = true
		w.mu.Unlock()
		return nil
	}
	w.running = true
	w.mu.Unlock()
	var err error
	for {
		_, err = s.drainEntities(ctx, 0)
		w.mu.Lock()
		if !w.again || err != nil {
			w.running, w.again = false, false
			w.mu.Unlock()
			return err
		}
		w.again = false
		w.mu.Unlock()
	}
}

// applyAfterWrite applies what a request just queued: at once, in the
// request, when no drain runs on this node (so a device refreshing next
// finds its entity), but at most four batches of the queue (enough for
// the held updates it releases); the rest, and what arrives while a drain
// runs, is left to a drain in the background.
func (s *Service) applyAfterWrite(ctx context.Context) {
	w := &s.entityWork
	w.mu.Lock()
	if w.running {
		w.again = true
		w.mu.Unlock()
		return
	}
	w.running = true
	w.mu.Unlock()
	more, err := s.drainEntities(ctx, 4)
	if err != nil {
		s.log.Error("applying entities", "err", err)
	}
	w.mu.Lock()
	again := w.again || more
	w.running, w.again = false, false
	w.mu.Unlock()
	if again {
		go func() {
			if err := s.ApplyEntities(context.WithoutCancel(ctx)); err != nil {
				s.log.Error("applying entities", "err", err)
			}
		}()
	}
}

// drainEntities applies the queue until nothing more can be applied, or
// (batches > 0) after that many batches, reporting whether items remain.
func (s *Service) drainEntities(ctx context.Context, batches int) (more bool, _ error) {
	seen := map[int64]int{}
	for n := 0; ; n++ {
		if batches > 0 && n == batches {
			return true, nil
		}
		items, err := s.entities.Queue(ctx, s.now().Add(-BacklogWait), 100)
		if err != nil {
			return false, err
		}
		progress := false
		for _, q := range items {
			if seen[q.ID] > 1 {
				continue // failed twice in this drain: left for the next
			}
			seen[q.ID]++
			if err := s.applyQueued(ctx, q); err != nil {
				s.log.Error("applying a submission's entities", "queue", q.ID, "err", err)
				continue
			}
			progress = true
		}
		if !progress {
			return false, nil
		}
	}
}

// applyQueued applies one queued submission's entity blocks.
func (s *Service) applyQueued(ctx context.Context, q storage.QueueItem) error {
	sub, err := s.entities.Queued(ctx, q)
	if err != nil {
		return err
	}
	if sub == nil {
		return s.entities.Drop(ctx, q) // the submission was erased
	}
	xml, err := s.submissions.XML(ctx, q.ProjectID, &sub.Version)
	if err != nil {
		return err
	}
	schema, err := s.schema(ctx, sub.FormVersionID)
	if err != nil {
		return err
	}
	inst, err := formspec.ParseInstance(xml, s.Limits.XML)
	if err != nil {
		return err
	}
	ops := schema.EntityOps(inst)
	_, err = s.entities.ApplySubmission(ctx, q, sub, ops, s.entityEvent(q.ProjectID, sub.XMLFormID, sub.Version.InstanceID, q.ActorID, q.Held))
	return err
}

// entityEvent makes the audit event of what became of one entity op of a
// submission (forced: applied without its offline predecessor).
func (s *Service) entityEvent(projectID int64, xmlFormID, instanceID string, actorID int64, forced bool) func(storage.Outcome) *haven.AuditEvent {
	return func(o storage.Outcome) *haven.AuditEvent {
		e := &haven.AuditEvent{ActorID: actorID, ProjectID: projectID, Object: objEntity(projectID, o.Op.Dataset, o.Op.UUID),
			Details: map[string]any{"submission": objSubmission(projectID, xmlFormID, instanceID)}}
		switch o.Action {
		case "create":
			e.Action = "entity.create"
		case "update":
			e.Action = "entity.update.version"
			e.Details["version"] = o.Entity.Version
			if o.Entity.Conflict != nil {
				e.Details["conflict"] = *o.Entity.Conflict
			}
		case "held":
			e.Action = "submission.backlog.hold"
		default:
			e.Action, e.Outcome = "entity.error", haven.ErrorCode(o.Err)
			e.Details["problem"] = haven.ErrorMessage(o.Err)
		}
		if forced && o.Action != "held" {
			e.Details["force"] = true
		}
		return e
	}
}

// entityListFor returns a list of a project that p may do action on.
func (s *Service) entityListFor(ctx context.Context, p *haven.Principal, action haven.Action, projectID int64, name string) (*haven.EntityList, error) {
	if err := s.authorize(p, action, projectID); err != nil {
		return nil, err
	}
	return s.entities.List(ctx, projectID, name)
}

// EntityListInfo is an entity list as Central describes it, with Haven's
// purpose and tier for each property.
type EntityListInfo struct {
	*haven.EntityList
	Properties  []EntityPropertyInfo `json:"properties"`
	SourceForms []storage.ListForm   `json:"sourceForms"`
	LinkedForms []storage.ListForm   `json:"linkedForms"`
	// Extended metadata (Central's X-Extended-Metadata).
	Entities   int        `json:"entities"`
	Conflicts  int        `json:"conflicts"`
	LastEntity *time.Time `json:"lastEntity"`
	LabelTier  haven.Sensitivity
}

// EntityPropertyInfo is a property as Central lists it, with its purpose and tier.
type EntityPropertyInfo struct {
	haven.EntityProperty
	ODataName string             `json:"odataName"`
	Forms     []storage.ListForm `json:"forms"`
}

// EntityLists lists a project's entity lists.
func (s *Service) EntityLists(ctx context.Context, p *haven.Principal, projectID int64) ([]EntityListInfo, error) {
	if err := s.authorize(p, haven.ActionFormRead, projectID); err != nil {
		return nil, err
	}
	lists, err := s.entities.Lists(ctx, projectID)
	if err != nil {
		return nil, err
	}
	out := []EntityListInfo{}
	for _, l := range lists {
		info, err := s.listInfo(ctx, projectID, l)
		if err != nil {
			return nil, err
		}
		out = append(out, *info)
	}
	return out, nil
}

// EntityList describes one entity list.
func (s *Service) EntityList(ctx context.Context, p *haven.Principal, projectID int64, name string) (*EntityListInfo, error) {
	l, err := s.entityListFor(ctx, p, haven.ActionFormRead, projectID, name)
	if err != nil {
		return nil, err
	}
	return s.listInfo(ctx, projectID, l)
}

func (s *Service) listInfo(ctx context.Context, projectID int64, l *haven.EntityList) (*EntityListInfo, error) {
	info := &EntityListInfo{EntityList: l, Properties: []EntityPropertyInfo{}}
	props, err := s.entities.Properties(ctx, l.ID)
	if err != nil {
		return nil, err
	}
	if info.SourceForms, err = s.entities.SourceForms(ctx, l.ID); err != nil {
		return nil, err
	}
	// Which published forms save to each property (Central's forms of a property).
	savedBy := map[string][]storage.ListForm{}
	for _, sf := range info.SourceForms {
		f, err := s.forms.Get(ctx, projectID, sf.XMLFormID)
		if err != nil || f.CurrentVersionID == 0 {
			continue
		}
		schema, err := s.schema(ctx, f.CurrentVersionID)
		if err != nil {
			return nil, err
		}
		for _, b := range schema.Entities() {
			if b.Dataset != l.Name {
				continue
			}
			for _, p := range b.Properties {
				if !slices.Contains(savedBy[p.Name], sf) {
					savedBy[p.Name] = append(savedBy[p.Name], sf)
				}
			}
		}
	}
	for _, p := range props {
		forms := savedBy[p.Name]
		if forms == nil {
			forms = []storage.ListForm{}
		}
		info.Properties = append(info.Properties, EntityPropertyInfo{EntityProperty: p, ODataName: odataName(p.Name), Forms: forms})
	}
	if info.LinkedForms, err = s.linkedForms(ctx, projectID, l.Name); err != nil {
		return nil, err
	}
	if info.Entities, info.Conflicts, info.LastEntity, err = s.entities.ListStats(ctx, l.ID); err != nil {
		return nil, err
	}
	info.LabelTier, err = s.entities.LabelTier(ctx, l.ID)
	return info, err
}

// linkedForms lists the published forms that read a list as their CSV.
func (s *Service) linkedForms(ctx context.Context, projectID int64, name string) ([]storage.ListForm, error) {
	forms, err := s.forms.List(ctx, projectID)
	if err != nil {
		return nil, err
	}
	out := []storage.ListForm{}
	for _, f := range forms {
		if f.CurrentVersionID == 0 {
			continue
		}
		schema, err := s.schema(ctx, f.CurrentVersionID)
		if err != nil {
			return nil, err
		}
		if _, ok := schema.EntityListFiles()[name+".csv"]; ok {
			out = append(out, storage.ListForm{XMLFormID: f.XMLFormID, Name: f.Name})
		}
	}
	return out, nil
}

// CreateEntityList makes a list by name (Central's POST .../datasets).
func (s *Service) CreateEntityList(ctx context.Context, p *haven.Principal, projectID int64, name string, approval bool) (_ *EntityListInfo, err error) {
	e := s.event(ctx, p, "dataset.create", projectID, objEntityList(projectID, name))
	defer func() { s.record(ctx, e, err) }()
	if err := s.authorize(p, haven.ActionFormWrite, projectID); err != nil {
		return nil, err
	}
	if msg := formspec.CheckDatasetName(name); msg != "" {
		return nil, haven.Errorf(haven.EINVALID, "%s", msg)
	}
	l, err := s.entities.CreateList(ctx, projectID, name, approval, e)
	if err != nil {
		return nil, err
	}
	return s.listInfo(ctx, projectID, l)
}

// AddEntityProperty adds a property to a list. Unlike Central, Haven
// needs its purpose and tier, as for any field.
func (s *Service) AddEntityProperty(ctx context.Context, p *haven.Principal, projectID int64, name string, prop haven.EntityProperty) (err error) {
	e := s.event(ctx, p, "dataset.property.create", projectID, objEntityList(projectID, name))
	detail(e, "property", prop.Name)
	defer func() { s.record(ctx, e, err) }()
	l, err := s.entityListFor(ctx, p, haven.ActionFormWrite, projectID, name)
	if err != nil {
		return err
	}
	if msg := formspec.CheckEntityProperty(prop.Name); msg != "" {
		return haven.Errorf(haven.EINVALID, "%s", msg)
	}
	var missing []string
	if strings.TrimSpace(prop.Purpose) == "" {
		missing = append(missing, `"purpose" (why it is kept and how it will be used)`)
	}
	if !prop.Sensitivity.Valid() {
		missing = append(missing, `"sensitivity" (public, level_1, level_2 or level_3)`)
	}
	if len(missing) > 0 {
		return haven.Errorf(haven.EINVALID, "The property %q needs %s: Haven keeps no value without them.", prop.Name, strings.Join(missing, " and "))
	}
	return s.entities.AddProperty(ctx, l, prop, e)
}

// SetEntityListApproval sets whether a list's entities are made when
// their submission is approved rather than when it arrives.
func (s *Service) SetEntityListApproval(ctx context.Context, p *haven.Principal, projectID int64, name string, approval bool) (_ *EntityListInfo, err error) {
	e := s.event(ctx, p, "dataset.update", projectID, objEntityList(projectID, name))
	detail(e, "approvalRequired", approval)
	defer func() { s.record(ctx, e, err) }()
	l, err := s.entityListFor(ctx, p, haven.ActionFormWrite, projectID, name)
	if err != nil {
		return nil, err
	}
	if err := s.entities.SetApproval(ctx, l, approval, e); err != nil {
		return nil, err
	}
	return s.listInfo(ctx, projectID, l)
}

// readable returns a list whose collected data p may read, and what p
// may see of it.
func (s *Service) readable(ctx context.Context, p *haven.Principal, projectID int64, name string) (*haven.EntityList, *entityView, error) {
	l, err := s.entityListFor(ctx, p, haven.ActionSubmissionRead, projectID, name)
	if err != nil {
		return nil, nil, err
	}
	v, err := s.entityView(ctx, p, l)
	return l, v, err
}

// entityView is what one reader may see of a list's entities.
type entityView struct {
	props     map[string]haven.Sensitivity
	labelTier haven.Sensitivity
	clearance haven.Sensitivity
}

func (s *Service) entityView(ctx context.Context, p *haven.Principal, l *haven.EntityList) (*entityView, error) {
	props, err := s.entities.Properties(ctx, l.ID)
	if err != nil {
		return nil, err
	}
	v := &entityView{props: map[string]haven.Sensitivity{}, clearance: p.Clearance(l.ProjectID)}
	for _, pr := range props {
		v.props[pr.Name] = pr.Sensitivity
	}
	v.labelTier, err = s.entities.LabelTier(ctx, l.ID)
	return v, err
}

// sees reports whether the reader may see a property (one the list does
// not define counts as level_3).
func (v *entityView) sees(prop string) bool {
	t, ok := v.props[prop]
	if !ok {
		t = haven.Level3
	}
	return v.clearance.Covers(t)
}

func (v *entityView) label() bool { return v.clearance.Covers(v.labelTier) }

// trim removes from a version what the reader may not see.
func (v *entityView) trim(ev *haven.EntityVersion) {
	keep := func(m map[string]string) map[string]string {
		out := map[string]string{}
		for k, val := range m {
			if k == "label" {
				if v.label() {
					out[k] = val
				}
			} else if v.sees(k) {
				out[k] = val
			}
		}
		return out
	}
	ev.Data, ev.Received = keep(ev.Data), keep(ev.Received)
	if !v.label() {
		ev.Label = ""
	}
	conf := ev.ConflictingProperties[:0:0]
	for _, c := range ev.ConflictingProperties {
		if c == "label" && v.label() || c != "label" && v.sees(c) {
			conf = append(conf, c)
		}
	}
	ev.ConflictingProperties = conf
}

// Entities lists a list's entities as the reader may see them.
func (s *Service) Entities(ctx context.Context, p *haven.Principal, projectID int64, name string, deleted bool) (_ []*haven.Entity, err error) {
	e := s.event(ctx, p, "entity.list", projectID, objEntityList(projectID, name))
	defer func() { s.record(ctx, e, err) }()
	l, v, err := s.readable(ctx, p, projectID, name)
	if err != nil {
		return nil, err
	}
	s.record(ctx, e, nil)
	out := []*haven.Entity{}
	err = s.entities.Each(ctx, l, deleted, func(en *haven.Entity) error {
		v.trim(&en.Current)
		out = append(out, en)
		return nil
	})
	return out, err
}

// Entity returns one entity as the reader may see it.
func (s *Service) Entity(ctx context.Context, p *haven.Principal, projectID int64, name, uuid string) (_ *haven.Entity, err error) {
	e := s.event(ctx, p, "entity.read", projectID, objEntity(projectID, name, uuid))
	defer func() { s.record(ctx, e, err) }()
	l, v, err := s.readable(ctx, p, projectID, name)
	if err != nil {
		return nil, err
	}
	en, err := s.entities.Get(ctx, l, uuid, false)
	if err != nil {
		return nil, err
	}
	v.trim(&en.Current)
	return en, nil
}

// EntityVersions returns every version of an entity as the reader may see them.
func (s *Service) EntityVersions(ctx context.Context, p *haven.Principal, projectID int64, name, uuid string) (_ []haven.EntityVersion, err error) {
	e := s.event(ctx, p, "entity.versions.read", projectID, objEntity(projectID, name, uuid))
	defer func() { s.record(ctx, e, err) }()
	l, v, err := s.readable(ctx, p, projectID, name)
	if err != nil {
		return nil, err
	}
	en, err := s.entities.Get(ctx, l, uuid, false)
	if err != nil {
		return nil, err
	}
	vs, err := s.entities.Versions(ctx, l, en)
	if err != nil {
		return nil, err
	}
	for i := range vs {
		v.trim(&vs[i])
	}
	return vs, nil
}

// EntityInput is an entity as the API sends it.
type EntityInput struct {
	UUID  string            `json:"uuid"`
	Label *string           `json:"label"`
	Data  map[string]string `json:"data"`
}

// checkWrite refuses what the writer may not write: properties the list
// lacks, and values above their clearance (one cannot write what one may
// not read back).
func (v *entityView) checkWrite(l *haven.EntityList, in EntityInput) error {
	for k := range in.Data {
		if _, ok := v.props[k]; !ok {
			return haven.Errorf(haven.EINVALID, "The entity list %q has no property %q. Add it first (with its purpose and sensitivity), or leave it out.", l.Name, k)
		}
		if !v.sees(k) {
			return haven.Errorf(haven.EFORBIDDEN, "The property %q is %s, above your clearance in this project: you cannot set it.", k, v.props[k])
		}
	}
	if in.Label != nil && !v.label() {
		return haven.Errorf(haven.EFORBIDDEN, "The labels of the list %q are %s, above your clearance in this project: you cannot set one.", l.Name, v.labelTier)
	}
	return nil
}

// CreateEntities makes entities over the API: one, or many at once (all
// or none). Each needs a label; a uuid is made when none is given.
func (s *Service) CreateEntities(ctx context.Context, p *haven.Principal, projectID int64, name string, in []EntityInput) (_ []*haven.Entity, err error) {
	e := s.event(ctx, p, "entity.create", projectID, objEntityList(projectID, name))
	detail(e, "count", len(in))
	defer func() { s.record(ctx, e, err) }()
	l, err := s.entityListFor(ctx, p, haven.ActionSubmissionUpdate, projectID, name)
	if err != nil {
		return nil, err
	}
	if len(in) == 0 {
		return nil, haven.Errorf(haven.EINVALID, "No entity was given: send {\"label\": ..., \"data\": {...}} or {\"entities\": [...]}.")
	}
	v, err := s.entityView(ctx, p, l)
	if err != nil {
		return nil, err
	}
	changes := make([]storage.APIChange, len(in))
	for i, x := range in {
		if err := v.checkWrite(l, x); err != nil {
			return nil, err
		}
		if x.Label == nil || strings.TrimSpace(*x.Label) == "" {
			return nil, haven.Errorf(haven.EINVALID, "Entity %d has no label: every entity needs one.", i+1)
		}
		id := strings.ToLower(strings.TrimPrefix(x.UUID, "uuid:"))
		if id == "" {
			id = strings.TrimPrefix(formspec.NewInstanceID(), "uuid:")
		}
		if !formspec.ValidUUID(id) {
			return nil, haven.Errorf(haven.EINVALID, "%q is not a UUID.", x.UUID)
		}
		changes[i] = storage.APIChange{UUID: id, Label: x.Label, Data: x.Data}
	}
	out, err := s.entities.CreateEntities(ctx, l, changes, p.ActorID, func(en *haven.Entity) *haven.AuditEvent {
		ev := s.event(ctx, p, "entity.create", projectID, objEntity(projectID, name, en.UUID))
		ev.Outcome = "ok"
		return ev
	})
	if err != nil {
		return nil, err
	}
	e.Recorded = true // each entity's event went with it
	for _, en := range out {
		v.trim(&en.Current)
	}
	return out, nil
}

// UpdateEntity changes an entity over the API (Central's PATCH): from
// baseVersion, or whatever the current version with force; resolve marks
// a conflict resolved.
func (s *Service) UpdateEntity(ctx context.Context, p *haven.Principal, projectID int64, name, uuid string, in EntityInput, baseVersion int64, force, resolve bool) (_ *haven.Entity, err error) {
	e := s.event(ctx, p, "entity.update.version", projectID, objEntity(projectID, name, uuid))
	defer func() { s.record(ctx, e, err) }()
	l, err := s.entityListFor(ctx, p, haven.ActionSubmissionUpdate, projectID, name)
	if err != nil {
		return nil, err
	}
	if !force && baseVersion == 0 {
		return nil, haven.Errorf(haven.EINVALID, "Say which version the change is made from (?baseVersion=N), or force it (?force=true).")
	}
	v, err := s.entityView(ctx, p, l)
	if err != nil {
		return nil, err
	}
	if err := v.checkWrite(l, in); err != nil {
		return nil, err
	}
	if resolve {
		e.Action = "entity.update.resolve"
	}
	en, err := s.entities.UpdateEntity(ctx, l, storage.APIChange{UUID: uuid, Label: in.Label, Data: in.Data, BaseVersion: baseVersion, Force: force, Resolve: resolve}, p.ActorID, e)
	if err != nil {
		return nil, err
	}
	v.trim(&en.Current)
	return en, nil
}

// DeleteEntity erases an entity: its versions and key are destroyed, and
// devices are told it is gone.
func (s *Service) DeleteEntity(ctx context.Context, p *haven.Principal, projectID int64, name, uuid string) (err error) {
	e := s.event(ctx, p, "entity.delete", projectID, objEntity(projectID, name, uuid))
	defer func() { s.record(ctx, e, err) }()
	l, err := s.entityListFor(ctx, p, haven.ActionSubmissionDelete, projectID, name)
	if err != nil {
		return err
	}
	return s.entities.DeleteEntity(ctx, l, uuid, e)
}

// EntitiesCSV writes a list's entities as Central's entities.csv: __id,
// label, the properties the reader may see, then __createdAt,
// __creatorId, __creatorName, __updates, __updatedAt, __version.
func (s *Service) EntitiesCSV(ctx context.Context, p *haven.Principal, projectID int64, name string) (_ []byte, err error) {
	e := s.event(ctx, p, "entity.export", projectID, objEntityList(projectID, name))
	defer func() { s.record(ctx, e, err) }()
	l, v, err := s.readable(ctx, p, projectID, name)
	if err != nil {
		return nil, err
	}
	props, err := s.entities.Properties(ctx, l.ID)
	if err != nil {
		return nil, err
	}
	var cols []string
	for _, pr := range props {
		if v.sees(pr.Name) {
			cols = append(cols, pr.Name)
		}
	}
	s.record(ctx, e, nil)
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(append(append([]string{"__id", "label"}, cols...), "__createdAt", "__creatorId", "__creatorName", "__updates", "__updatedAt", "__version"))
	names := map[int64]string{}
	err = s.entities.Each(ctx, l, false, func(en *haven.Entity) error {
		v.trim(&en.Current)
		// Opened in a spreadsheet: a value it would run as a formula is
		// made text, as in every export (the devices' lists are left
		// as they are: Collect reads them, not a spreadsheet).
		row := []string{en.UUID, export.SafeCell(en.Current.Label)}
		for _, c := range cols {
			row = append(row, export.SafeCell(en.Current.Data[c]))
		}
		if _, ok := names[en.CreatorID]; !ok {
			names[en.CreatorID] = s.actorName(ctx, en.CreatorID)
		}
		updated := ""
		if en.UpdatedAt != nil {
			updated = en.UpdatedAt.Format(time.RFC3339Nano)
		}
		row = append(row, en.CreatedAt.Format(time.RFC3339Nano), fmt.Sprint(en.CreatorID), export.SafeCell(names[en.CreatorID]), fmt.Sprint(en.Version-1), updated, fmt.Sprint(en.Version))
		return w.Write(row)
	})
	w.Flush()
	return buf.Bytes(), err
}

// actorName is an actor's display name (for exports); "" when unknown.
func (s *Service) actorName(ctx context.Context, id int64) string {
	if id == 0 {
		return ""
	}
	n, err := s.users.ActorName(ctx, id)
	if err != nil {
		return ""
	}
	return n
}

// EntityFilter is what one app user's devices get of a list: entities
// whose property holds one of Values.
type EntityFilter = storage.EntityFilter

// SetEntityFilter sets which of a list's entities an app user's (or
// collector's) devices get: those whose property holds one of values (no
// values: all).
func (s *Service) SetEntityFilter(ctx context.Context, p *haven.Principal, projectID int64, name string, f storage.EntityFilter) (err error) {
	e := s.event(ctx, p, "dataset.filter.set", projectID, objEntityList(projectID, name)+"/"+objActor(f.ActorID))
	defer func() { s.record(ctx, e, err) }()
	l, err := s.entityListFor(ctx, p, haven.ActionAppUserManage, projectID, name)
	if err != nil {
		return err
	}
	// A filter is for someone who fills forms in the project: one of its
	// app users, or a user with a role in it.
	target, err := s.users.AppUserPrincipalByID(ctx, f.ActorID)
	if haven.ErrorCode(err) == haven.ENOTFOUND {
		target, err = s.users.Principal(ctx, f.ActorID)
	}
	if err != nil || !target.Member(projectID) {
		return haven.Errorf(haven.ENOTFOUND, "Actor %d is neither an app user of project %d nor one of its users.", f.ActorID, projectID)
	}
	if len(f.Values) > 0 {
		props, err := s.entities.Properties(ctx, l.ID)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(props, func(pr haven.EntityProperty) bool { return pr.Name == f.Property }) {
			return haven.Errorf(haven.EINVALID, "The entity list %q has no property %q to filter on.", name, f.Property)
		}
	}
	return s.entities.SetFilter(ctx, l, f, e)
}

// EntityFilters lists a list's device filters.
func (s *Service) EntityFilters(ctx context.Context, p *haven.Principal, projectID int64, name string) ([]storage.EntityFilter, error) {
	l, err := s.entityListFor(ctx, p, haven.ActionAppUserManage, projectID, name)
	if err != nil {
		return nil, err
	}
	return s.entities.Filters(ctx, l)
}

// deviceList is an entity list as one device gets it.
type deviceList struct {
	csv  []byte
	hash string
}

// deviceColumns returns the properties of a list that the forms p may
// fill read, in the list's order, and only those p's clearance covers.
func (s *Service) deviceColumns(ctx context.Context, p *haven.Principal, l *haven.EntityList) ([]string, error) {
	forms, err := s.forms.List(ctx, l.ProjectID)
	if err != nil {
		return nil, err
	}
	read := map[string]bool{}
	file := l.Name + ".csv"
	for _, f := range forms {
		if f.CurrentVersionID == 0 || f.State == haven.FormClosed {
			continue
		}
		if ok, err := s.assigned(ctx, p, f); err != nil {
			return nil, err
		} else if !ok {
			continue
		}
		schema, err := s.schema(ctx, f.CurrentVersionID)
		if err != nil {
			return nil, err
		}
		for c := range schema.ListColumns(file) {
			read[c] = true
		}
	}
	props, err := s.entities.Properties(ctx, l.ID)
	if err != nil {
		return nil, err
	}
	clearance := p.Clearance(l.ProjectID)
	var cols []string
	for _, pr := range props {
		if read[pr.Name] && clearance.Covers(pr.Sensitivity) {
			cols = append(cols, pr.Name)
		}
	}
	return cols, nil
}

// deviceListCSV makes the CSV of a list for one device: name, label,
// __version and the columns its forms read that its clearance covers;
// only entities its filter lets through. The label goes out only when
// the device's clearance covers the label's tier.
func (s *Service) deviceListCSV(ctx context.Context, p *haven.Principal, l *haven.EntityList) (*deviceList, error) {
	cols, err := s.deviceColumns(ctx, p, l)
	if err != nil {
		return nil, err
	}
	labelTier, err := s.entities.LabelTier(ctx, l.ID)
	if err != nil {
		return nil, err
	}
	showLabel := p.Clearance(l.ProjectID).Covers(labelTier)
	filter, err := s.entities.FilterOf(ctx, l, p.ActorID)
	if err != nil {
		return nil, err
	}
	// Devices ask at every refresh of their forms, and most get the same
	// list: it is kept while the list's entities stay the same.
	sig, err := s.entities.Signature(ctx, l.ID)
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("%d|%s|%q|%v|%v", l.ID, sig, cols, showLabel, filter)
	if dl := s.deviceLists.get(key); dl != nil {
		return dl, nil
	}
	// A person who objected is no longer processed: their entities stay
	// on the server but go to no device.
	objected, err := s.entities.Objected(ctx, l)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(append([]string{"name", "label", "__version"}, cols...))
	err = s.entities.Each(ctx, l, false, func(en *haven.Entity) error {
		if filter != nil && !slices.Contains(filter.Values, en.Current.Data[filter.Property]) || objected[en.UUID] {
			return nil
		}
		label := ""
		if showLabel {
			label = en.Current.Label
		}
		row := []string{en.UUID, label, fmt.Sprint(en.Version)}
		for _, c := range cols {
			row = append(row, en.Current.Data[c])
		}
		return w.Write(row)
	})
	if err != nil {
		return nil, err
	}
	w.Flush()
	dl := &deviceList{csv: buf.Bytes(), hash: md5Hex(buf.Bytes())}
	s.deviceLists.put(key, dl)
	return dl, nil
}

// listCache keeps lists made for devices, up to listCacheBytes in all.
type listCache struct {
	mu    sync.Mutex
	m     map[string]*deviceList
	bytes int
}

// listCacheBytes bounds the lists kept for devices (a list of 10,000
// households with a few columns is about 0.5 MB).
const listCacheBytes = 32 << 20

func (c *listCache) get(key string) *deviceList {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

func (c *listCache) put(key string, dl *deviceList) {
	if len(dl.csv) > listCacheBytes/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*deviceList{}
	}
	// Stale versions of a list are never asked for again: when full, start over.
	if c.bytes+len(dl.csv) > listCacheBytes {
		c.m, c.bytes = map[string]*deviceList{}, 0
	}
	if old := c.m[key]; old != nil {
		c.bytes -= len(old.csv)
	}
	c.m[key] = dl
	c.bytes += len(dl.csv)
}

// linkLists marks the attachments of a form version that are entity
// lists: a CSV the form reads, named after a list of the project, with no
// file uploaded in its place.
func (s *Service) linkLists(ctx context.Context, projectID, versionID int64, all []haven.FormAttachment) ([]haven.FormAttachment, error) {
	var schema *formspec.Form
	for i, a := range all {
		if a.Exists || !strings.HasSuffix(a.Name, ".csv") {
			continue
		}
		if schema == nil {
			var err error
			if schema, err = s.schema(ctx, versionID); err != nil {
				return nil, err
			}
		}
		name, ok := schema.EntityListFiles()[a.Name]
		if !ok {
			continue
		}
		if _, err := s.entities.List(ctx, projectID, name); err == nil {
			all[i].EntityList = name
		} else if haven.ErrorCode(err) != haven.ENOTFOUND {
			return nil, err
		}
	}
	return all, nil
}

// EntityIntegrity answers Collect's integrity check for a list: of the
// ids it holds, which are deleted on the server, or which the device may
// no longer hold (outside its filter).
func (s *Service) EntityIntegrity(ctx context.Context, p *haven.Principal, projectID int64, name string, ids []string) (map[string]bool, error) {
	if !p.Can(haven.ActionSubmissionRead, projectID) {
		if err := s.authorize(p, haven.ActionDeviceForms, projectID); err != nil {
			return nil, err
		}
	}
	l, err := s.entities.List(ctx, projectID, name)
	if err != nil {
		return nil, err
	}
	if len(ids) > 10000 {
		return nil, haven.Errorf(haven.ETOOLARGE, "Ask about at most 10,000 entities at once.")
	}
	deleted, err := s.entities.Deleted(ctx, l, ids)
	if err != nil {
		return nil, err
	}
	objected, err := s.entities.Objected(ctx, l)
	if err != nil {
		return nil, err
	}
	for id := range deleted {
		deleted[id] = deleted[id] || objected[id]
	}
	filter, err := s.entities.FilterOf(ctx, l, p.ActorID)
	if err != nil || filter == nil {
		return deleted, err
	}
	for id, gone := range deleted {
		if gone {
			continue
		}
		en, err := s.entities.Get(ctx, l, id, false)
		if err != nil {
			return nil, err
		}
		deleted[id] = !slices.Contains(filter.Values, en.Current.Data[filter.Property])
	}
	return deleted, nil
}

// odataName is a property's name as OData may carry it: letters, digits
// and underscores (Central's sanitising: anything else becomes _).
func odataName(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// EntityTable is an entity list as the console shows it to one reader:
// the columns their clearance covers, those withheld, and the entities.
type EntityTable struct {
	List      *EntityListInfo
	Columns   []string
	Withheld  []string
	LabelSeen bool
	Entities  []*haven.Entity
}

// EntityTableFor returns a list's entities as the reader may see them, for
// the console; with no right to read collected data, the list's
// definition only.
func (s *Service) EntityTableFor(ctx context.Context, p *haven.Principal, projectID int64, name string) (*EntityTable, error) {
	info, err := s.EntityList(ctx, p, projectID, name)
	if err != nil {
		return nil, err
	}
	t := &EntityTable{List: info, Entities: []*haven.Entity{}}
	clearance := p.Clearance(projectID)
	for _, pr := range info.Properties {
		if clearance.Covers(pr.Sensitivity) {
			t.Columns = append(t.Columns, pr.Name)
		} else {
			t.Withheld = append(t.Withheld, pr.Name)
		}
	}
	t.LabelSeen = clearance.Covers(info.LabelTier)
	if !p.Can(haven.ActionSubmissionRead, projectID) {
		return t, nil
	}
	t.Entities, err = s.Entities(ctx, p, projectID, name, false)
	return t, err
}

// EntityChange is one property (or the label) that a version changed, as
// Central's diffs list it.
type EntityChange struct {
	Old      *string `json:"old"`
	New      *string `json:"new"`
	Property string  `json:"propertyName"`
}

// EntityDiffs lists what each version of an entity changed from the one
// before (Central's .../diffs), within the reader's clearance.
func (s *Service) EntityDiffs(ctx context.Context, p *haven.Principal, projectID int64, name, uuid string) ([][]EntityChange, error) {
	vs, err := s.EntityVersions(ctx, p, projectID, name, uuid)
	if err != nil {
		return nil, err
	}
	values := func(v haven.EntityVersion) map[string]string {
		m := maps.Clone(v.Data)
		if m == nil {
			m = map[string]string{}
		}
		m["label"] = v.Label
		return m
	}
	out := [][]EntityChange{}
	for i := 1; i < len(vs); i++ {
		prev, cur := values(vs[i-1]), values(vs[i])
		changes := []EntityChange{}
		for _, k := range slices.Sorted(maps.Keys(cur)) {
			if old, ok := prev[k]; !ok || old != cur[k] {
				c := EntityChange{Property: k, New: ptr(cur[k])}
				if ok {
					c.Old = ptr(old)
				}
				changes = append(changes, c)
			}
		}
		out = append(out, changes)
	}
	return out, nil
}

func ptr(s string) *string { return &s }

// EntityAudits lists the audit events about an entity (Central's
// .../audits): who made, changed, read or erased it, when; never values.
func (s *Service) EntityAudits(ctx context.Context, p *haven.Principal, projectID int64, name, uuid string) (_ []haven.AuditEvent, err error) {
	e := s.event(ctx, p, "entity.audits.read", projectID, objEntity(projectID, name, uuid))
	defer func() { s.record(ctx, e, err) }()
	if _, err := s.entityListFor(ctx, p, haven.ActionSubmissionRead, projectID, name); err != nil {
		return nil, err
	}
	return s.audit.List(ctx, storage.AuditFilter{ProjectID: projectID, Object: objEntity(projectID, name, uuid)})
}

// FilterEntities keeps the entities an OData $filter selects: on their
// metadata only (Central's: __id, __system/createdAt, updatedAt,
// creatorId, conflict, deletedAt), never their values.
func (s *Service) FilterEntities(expr string, list []*haven.Entity) ([]*haven.Entity, error) {
	f, err := export.ParseEntityFilter(expr)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := list[:0:0]
	for _, e := range list {
		if f.Match(export.ODataMeta{InstanceID: e.UUID, SubmissionDate: e.CreatedAt, UpdatedAt: e.UpdatedAt, SubmitterID: e.CreatorID, ReviewState: e.Conflict}, now) {
			out = append(out, e)
		}
	}
	return out, nil
}
