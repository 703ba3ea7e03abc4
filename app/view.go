package app

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
)

// The read view: what one reader may see of a form's submissions. It is
// the one place that decides it, and every read path (a submission as
// JSON, its raw XML, listings and versions, files, subject access,
// corrections' answers, exports and aggregates) goes through it.
//
//   - A field's tier is the strictest that any version the submission was
//     stored under, or the form's current version, gives it: publishing a
//     version that lowers a tier never opens data collected under a higher
//     one. Exports and aggregates, which read every submission of a form,
//     use the strictest tier any published version ever gave the field.
//   - A computed value (a calculate, meta/instanceName, an entity label)
//     has the highest tier of what it reads (formspec derives it).
//   - A reader sees a field when their clearance in the project covers its
//     tier (an undecided field counts as level_3).
//   - Device ids count as level_2, as Haven maps the device's own metadata.
//   - The raw XML, and a correction's free-text reason, only to a reader
//     who sees every field of the version.

// deviceIDTier is the tier of device ids (and of who collected what, when).
const deviceIDTier = haven.Level2

// View is what one reader may see of one form version's submissions.
type View struct {
	schema    *formspec.Form               // the version whose XML is read; nil for a whole form
	tiers     map[string]haven.Sensitivity // the tier that applies to each field
	clearance haven.Sensitivity
	// Omitted lists the version's fields above the clearance, in document order.
	Omitted []string
}

// tier is the tier of the field at path; a path no version defines counts
// as the strictest.
func (v *View) tier(path string) haven.Sensitivity {
	if t, ok := v.tiers[path]; ok {
		return t
	}
	return haven.Level3
}

// Sees reports whether the reader may see the field at path.
func (v *View) Sees(path string) bool { return v.clearance.Covers(v.tier(path)) }

// keep is Sees for a node of the schema.
func (v *View) keep(n *formspec.Node) bool { return v.Sees(n.Path) }

// Complete reports whether the reader may see every field of the version.
func (v *View) Complete() bool { return len(v.Omitted) == 0 }

// DeviceIDs reports whether the reader may see device ids.
func (v *View) DeviceIDs() bool { return v.clearance.Covers(deviceIDTier) }

// InstanceName reports whether the reader may see the instance name: it is
// made from answers, and has the tier of what it reads.
func (v *View) InstanceName() bool {
	if v.schema == nil {
		return false
	}
	return v.Sees("/" + v.schema.RootName + "/meta/instanceName")
}

// tierSet merges the tiers of form versions, keeping the strictest of each
// field. Published versions never change, so merges are kept.
func (s *Service) tierSet(ctx context.Context, versionIDs []int64) (map[string]haven.Sensitivity, error) {
	ids := slices.Clone(versionIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	key := fmtIDs(ids)
	if t, ok := s.tierSets.Load(key); ok {
		return t.(map[string]haven.Sensitivity), nil
	}
	out := map[string]haven.Sensitivity{}
	for _, id := range ids {
		schema, err := s.schema(ctx, id)
		if err != nil {
			return nil, err
		}
		for _, fd := range schema.Schema() {
			out[fd.Path] = haven.MaxSensitivity(out[fd.Path], fd.Effective)
		}
	}
	s.tierSets.Store(key, out)
	return out, nil
}

// formTiers is the strictest tier any published version of a form gave
// each field.
func (s *Service) formTiers(ctx context.Context, f *haven.Form) (map[string]haven.Sensitivity, error) {
	versions, err := s.forms.Versions(ctx, f.ID)
	if err != nil {
		return nil, err
	}
	ids := make([]int64, len(versions))
	for i, v := range versions {
		ids[i] = v.ID
	}
	return s.tierSet(ctx, ids)
}

// formView is the reader's view of every submission of a form, for exports
// and aggregates.
func (s *Service) formView(ctx context.Context, p *haven.Principal, f *haven.Form) (*View, error) {
	tiers, err := s.formTiers(ctx, f)
	if err != nil {
		return nil, err
	}
	return &View{tiers: tiers, clearance: p.Clearance(f.ProjectID)}, nil
}

// views makes and keeps the views of the submissions one request reads.
type views struct {
	s    *Service
	p    *haven.Principal
	form *haven.Form
	made map[string]*View
}

func (s *Service) views(p *haven.Principal, f *haven.Form) *views {
	return &views{s: s, p: p, form: f, made: map[string]*View{}}
}

// of returns the reader's view of a submission: the structure of the
// version its current XML was filled in with, under the strictest tiers of
// every version it was stored under and the form's current one.
func (vs *views) of(ctx context.Context, sub *haven.Submission) (*View, error) {
	counted := append(slices.Clone(sub.FormVersionIDs), sub.Current.FormVersionID)
	if vs.form.CurrentVersionID != 0 {
		counted = append(counted, vs.form.CurrentVersionID)
	}
	slices.Sort(counted)
	counted = slices.Compact(counted)
	key := strconv.FormatInt(sub.Current.FormVersionID, 10) + ":" + fmtIDs(counted)
	if v := vs.made[key]; v != nil {
		return v, nil
	}
	schema, err := vs.s.schema(ctx, sub.Current.FormVersionID)
	if err != nil {
		return nil, err
	}
	tiers, err := vs.s.tierSet(ctx, counted)
	if err != nil {
		return nil, err
	}
	v := &View{schema: schema, tiers: tiers, clearance: vs.p.Clearance(vs.form.ProjectID)}
	for _, fd := range schema.Schema() {
		if !v.Sees(fd.Path) {
			v.Omitted = append(v.Omitted, fd.Path)
		}
	}
	vs.made[key] = v
	return v, nil
}

func fmtIDs(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(parts, ",")
}

// redact returns a copy of a submission record with what the view does not
// allow removed: the instance name and device ids.
func (v *View) redact(sub *haven.Submission) *haven.Submission {
	out := *sub
	if !v.InstanceName() {
		out.Current.InstanceName = ""
	}
	if !v.DeviceIDs() {
		out.DeviceID, out.Current.DeviceID = "", ""
	}
	return &out
}

// redactVersion removes from a version's record what the view does not allow.
func (v *View) redactVersion(sv *haven.SubmissionVersion) {
	if !v.InstanceName() {
		sv.InstanceName = ""
	}
	if !v.Complete() {
		sv.EditReason = "" // free text about the values corrected
	}
	if !v.DeviceIDs() {
		sv.DeviceID = ""
	}
}

// redactConsent removes from a consent record what the view does not allow.
func (v *View) redactConsent(c *haven.ConsentRecord) {
	if c != nil && !v.DeviceIDs() {
		c.DeviceID = ""
	}
}

// data returns the values of a submission the view allows, and the
// fields it leaves out.
func (v *View) data(inst *formspec.Instance) map[string]any {
	d, _ := v.schema.Data(inst, v.keep)
	return d
}

// files splits a submission's files into those the reader may see (named
// by fields they see) and the names of the others.
func (v *View) files(inst *formspec.Instance, all []haven.Attachment) (kept []haven.Attachment, left []string) {
	fields := v.schema.FileFields(inst)
	kept, left = []haven.Attachment{}, []string{}
	for _, a := range all {
		if path, ok := fields[a.Name]; ok && v.Sees(path) {
			kept = append(kept, a)
		} else {
			left = append(left, a.Name)
		}
	}
	return kept, left
}
