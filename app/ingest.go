package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/storage"
)

// Receipt says what became of a submission request.
type Receipt struct {
	FormID     string
	InstanceID string
	Created    bool     // stored a new submission or edit
	Duplicate  bool     // the same XML was already stored
	Missing    []string // files the XML names that have not arrived yet
	Incomplete bool     // the device said more requests follow (*isIncomplete*)
	// NotKept says why nothing of the submission was stored although the
	// device may clear it: consent not given, or withdrawn. "" when stored.
	NotKept string
}

// SubmitRequest is one submission request as a device sent it.
type SubmitRequest struct {
	Principal *haven.Principal
	ProjectID int64
	DeviceID  string
	Parts     *multipart.Reader
}

// Submit ingests one multipart submission request. Attachments stream
// straight into the blob store, encrypted, in bounded memory; nothing becomes
// visible until the database transaction that records the submission and
// its files commits, and on any refusal the files written are removed.
//
// The submission's audit event is written in the transaction that stores
// it; a refusal is audited with its reason.
func (s *Service) Submit(ctx context.Context, req SubmitRequest) (_ *Receipt, err error) {
	return s.submit(ctx, req, "submission.create", haven.ActionSubmit)
}

// submit ingests a request as the principal's right to action allows.
func (s *Service) submit(ctx context.Context, req SubmitRequest, action string, right haven.Action) (_ *Receipt, err error) {
	e := s.event(ctx, req.Principal, action, req.ProjectID, objProject(req.ProjectID))
	defer func() { s.record(ctx, e, err) }()
	if err := s.authorize(req.Principal, right, req.ProjectID); err != nil {
		return nil, err
	}
	if pr, err := s.projects.Get(ctx, req.ProjectID); err != nil {
		return nil, err
	} else if pr.Closed(s.now()) {
		return nil, haven.Errorf(haven.ECONFLICT, "Project %q has ended and no longer accepts submissions. Nothing was saved. Ask your supervisor what to do with this form.", pr.Name)
	}
	in := &ingestion{s: s, req: req, files: map[string]*storage.Blob{}, audit: e}
	rec, err := in.run(ctx)
	if err != nil {
		s.blobs.Discard(ctx, in.blobs()...)
		return nil, err
	}
	return rec, nil
}

type ingestion struct {
	s          *Service
	req        SubmitRequest
	xml        []byte
	inst       *formspec.Instance // its header only: the tree is dropped once checked
	form       *haven.Form
	version    *haven.FormVersion
	val        formspec.Validation
	expected   map[string]bool
	known      map[string]bool // files already stored for this instance
	files      map[string]*storage.Blob
	seen       map[string]bool
	incomplete bool
	schema     *formspec.Form
	consent    string // the consent outcome of the instance
	start, end *time.Time
	subject    string
	audit      *haven.AuditEvent
	entityOps  []haven.EntityOp // what the submission asks of entities (nil: the form saves to no list)
}

// kept reports whether the submission may be stored: consent given, or a
// form that relies on another legal basis.
func (in *ingestion) kept() bool {
	return in.consent == haven.ConsentGiven || in.consent == haven.ConsentNotNeeded
}

func (in *ingestion) blobs() []*storage.Blob {
	out := make([]*storage.Blob, 0, len(in.files))
	for _, b := range in.files {
		out = append(out, b)
	}
	return out
}

func (in *ingestion) run(ctx context.Context) (*Receipt, error) {
	in.seen = map[string]bool{}
	for {
		part, err := in.req.Parts.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, badMultipart(err)
		}
		err = in.part(ctx, part)
		part.Close()
		if err != nil {
			return nil, err
		}
	}
	if in.inst == nil {
		return nil, haven.Errorf(haven.EINVALID, "The request has no xml_submission_file part, so there is no form data to save. Send the form again.")
	}
	// Files that came before the XML are checked now.
	for name := range in.files {
		if !in.expected[name] {
			return nil, unreferenced(name)
		}
	}
	audit := in.audit
	audit.Object = objSubmission(in.req.ProjectID, in.form.XMLFormID, in.inst.InstanceID)
	detail(audit, "formVersion", in.version.Version)
	if in.inst.DeprecatedID != "" {
		detail(audit, "deprecatedId", in.inst.DeprecatedID)
	}
	if !in.kept() {
		// Nothing of it is stored. Collect sends a large form in several
		// requests; the tally counts the form once, on its last request.
		in.s.blobs.Discard(ctx, in.blobs()...)
		in.files = nil
		detail(audit, "consent", in.consent)
		if !in.incomplete {
			if err := in.s.submissions.RecordRefusal(ctx, in.form.ID, audit); err != nil {
				return nil, err
			}
		}
		return &Receipt{FormID: in.form.XMLFormID, InstanceID: in.inst.InstanceID, Incomplete: in.incomplete,
			NotKept: "Consent was not recorded as given, so nothing of this form was kept on the server. It can be removed from the device."}, nil
	}
	expected := in.val.Files
	consent := &haven.ConsentRecord{Outcome: in.consent, LegalBasis: in.schema.LegalBasis, DeviceStart: in.start, DeviceEnd: in.end,
		DeviceUserID: in.req.Principal.ActorID, DeviceID: in.req.DeviceID}
	if in.schema.Consent != nil {
		consent.LegalBasis, consent.Field, consent.StatementVersion = haven.BasisConsent, in.schema.Consent.Path, in.schema.StatementVersion
		if len(in.schema.Languages) == 1 {
			consent.Language = in.schema.Languages[0]
		}
	}
	var entityEvent func(storage.EntityOutcome) *haven.AuditEvent
	if in.entityOps != nil {
		entityEvent = in.s.entityEvent(in.req.ProjectID, in.form.XMLFormID, in.inst.InstanceID, in.req.Principal.ActorID, false)
	}
	res, err := in.s.submissions.Ingest(ctx, &storage.Incoming{
		ProjectID:     in.req.ProjectID,
		FormID:        in.form.ID,
		FormVersionID: in.version.ID,
		InstanceID:    in.inst.InstanceID,
		DeprecatedID:  in.inst.DeprecatedID,
		InstanceName:  in.inst.InstanceName,
		XML:           in.xml,
		SubmitterID:   in.req.Principal.ActorID,
		DeviceID:      in.req.DeviceID,
		Expected:      expected,
		Files:         in.files,
		Consent:       consent,
		Audit:         audit,
		Subject:       in.subject,
		Entities:      in.entityOps != nil,
		EntityOps:     in.entityOps,
		EntityEvent:   entityEvent,
	})
	if err != nil {
		return nil, err
	}
	if res.Created && in.entityOps != nil {
		// What it queued (an edit) or released (an offline update that
		// waited for it) is applied now, so that a device refreshing its
		// forms next finds it.
		in.s.applyAfterWrite(context.WithoutCancel(ctx))
	}
	in.s.blobs.Discard(ctx, res.Unused...)
	switch {
	case res.Withdrawn:
		return &Receipt{FormID: in.form.XMLFormID, InstanceID: in.inst.InstanceID, Incomplete: in.incomplete,
			NotKept: "Consent to this form was withdrawn, so it was not kept on the server. It can be removed from the device."}, nil
	case res.Erased:
		return &Receipt{FormID: in.form.XMLFormID, InstanceID: in.inst.InstanceID, Incomplete: in.incomplete,
			NotKept: "The person this form is about asked for their data to be erased, so it was not kept on the server. Remove it from the device."}, nil
	}
	return &Receipt{
		FormID: in.form.XMLFormID, InstanceID: in.inst.InstanceID,
		Created: res.Created, Duplicate: res.Duplicate, Missing: res.Missing, Incomplete: in.incomplete,
	}, nil
}

// badMultipart is the answer to an upload that could not be read: too large
// (the server cut it at its limit) or broken (the device's connection).
func badMultipart(err error) error {
	if strings.Contains(err.Error(), "request body too large") {
		return tooLarge()
	}
	return &haven.Error{Code: haven.EINVALID, Message: "The upload could not be read as multipart/form-data; it may have been cut off. Send the form again.", Err: err}
}

func tooLarge() error {
	return haven.Errorf(haven.ETOOLARGE, "The upload is larger than this server accepts in one request. Update ODK Collect so it splits large uploads, or ask your supervisor.")
}

func unreferenced(name string) error {
	return haven.Errorf(haven.EINVALID, "The file %q came with the submission but no question of the form names it, so nothing was saved. Remove the file from the form's folder on the device, or ask your supervisor.", name)
}

func (in *ingestion) part(ctx context.Context, part *multipart.Part) error {
	name := part.FormName()
	switch {
	case name == "xml_submission_file":
		if in.inst != nil {
			return haven.Errorf(haven.EINVALID, "The request has more than one xml_submission_file part. Send one form per request.")
		}
		return in.readXML(ctx, part)
	case name == "*isIncomplete*" && rawFileName(part) == "":
		v, err := io.ReadAll(io.LimitReader(part, 16))
		if err != nil {
			return badMultipart(err)
		}
		in.incomplete = strings.EqualFold(strings.TrimSpace(string(v)), "yes")
		return nil
	}
	fileName := rawFileName(part)
	if fileName == "" {
		fileName = name
	}
	if err := formspec.SafeFileName(fileName); err != nil {
		return err
	}
	if in.seen[fileName] {
		return haven.Errorf(haven.EINVALID, "The file %q was sent twice in one request. Send the form again.", fileName)
	}
	in.seen[fileName] = true
	if len(in.seen) > in.s.Limits.MaxAttachments {
		return haven.Errorf(haven.ETOOLARGE, "The request carries more than %d files. Update ODK Collect, which splits uploads at %d files.", in.s.Limits.MaxAttachments, in.s.Limits.MaxAttachments)
	}
	if in.inst != nil {
		if !in.expected[fileName] {
			return unreferenced(fileName)
		}
		if !in.kept() {
			// Consent not given: the file is read past, never written.
			if _, err := io.Copy(io.Discard, part); err != nil {
				return badMultipart(err)
			}
			return nil
		}
		if err := in.loadKnown(ctx); err != nil {
			return err
		}
		if in.known[fileName] {
			// A resend of a file already stored: read past it.
			_, err := io.Copy(io.Discard, part)
			if err != nil {
				return badMultipart(err)
			}
			return nil
		}
	}
	blob, err := in.s.blobs.Put(ctx, in.req.ProjectID, part, storage.PutOptions{})
	if err != nil {
		var he *haven.Error
		if errors.As(err, &he) {
			return err // the store failed (503: try again later), or the project has no key
		}
		return badMultipart(err) // reading the upload failed
	}
	in.files[fileName] = blob
	return nil
}

// loadKnown learns which files of this instance are already stored, once,
// and only for requests that carry files.
func (in *ingestion) loadKnown(ctx context.Context) error {
	if in.known != nil {
		return nil
	}
	var err error
	in.known, err = in.s.submissions.KnownFiles(ctx, in.form.ID, in.inst.InstanceID)
	return err
}

// rawFileName is the part's file name exactly as sent. (Part.FileName
// strips directories, which would let "../x.jpg" pass for "x.jpg".)
func rawFileName(part *multipart.Part) string {
	_, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return params["filename"]
}

func (in *ingestion) readXML(ctx context.Context, part *multipart.Part) error {
	max := in.s.Limits.XML.MaxBytes
	b, err := io.ReadAll(io.LimitReader(part, int64(max)+1))
	if err != nil {
		return badMultipart(err)
	}
	if len(b) > max {
		return haven.Errorf(haven.ETOOLARGE, "The form data is larger than %d bytes, more than Haven accepts.", max)
	}
	// The parsed tree lives only inside this function, within the parse
	// budget: what the rest of the request needs is taken from it here.
	release, err := in.s.parseSlot(ctx, len(b))
	if err != nil {
		return &haven.Error{Code: haven.EUNAVAILABLE, Err: err,
			Message: "The server was busy checking other large forms and the request ended before this one's turn came. Nothing was saved. Send the form again."}
	}
	defer release()
	inst, err := formspec.ParseInstance(b, in.s.Limits.XML)
	if err != nil {
		return err
	}
	in.audit.Object = objSubmission(in.req.ProjectID, inst.FormID, inst.InstanceID) // a refusal names what it refused
	if inst.Encrypted {
		return haven.Errorf(haven.EINVALID, "This submission is encrypted on the device; Haven does not accept ODK-encrypted submissions. Ask your supervisor for the current form.")
	}
	form, err := in.s.forms.Get(ctx, in.req.ProjectID, inst.FormID)
	if err != nil && haven.ErrorCode(err) != haven.ENOTFOUND {
		return err
	}
	if err != nil || form.CurrentVersionID == 0 {
		return haven.Errorf(haven.ENOTFOUND, "The form %q is not on this server (or not in this project). Nothing was saved. Ask your supervisor which server to send it to.", inst.FormID)
	}
	if form.State == haven.FormClosed {
		return haven.Errorf(haven.ECONFLICT, "The form %q is closed and no longer accepts submissions. Nothing was saved.", inst.FormID)
	}
	if ok, err := in.s.assigned(ctx, in.req.Principal, form); err != nil {
		return err
	} else if !ok {
		return haven.Errorf(haven.EFORBIDDEN, "The form %q is not assigned to this device's app user, so it cannot be sent here. Nothing was saved. Ask your supervisor to assign the form.", inst.FormID)
	}
	version, err := in.s.forms.PublishedVersion(ctx, form.ID, inst.Version)
	if err != nil {
		return haven.Errorf(haven.ENOTFOUND, "Version %q of form %q is not on this server. Nothing was saved. Ask your supervisor; the form may have been replaced before it was published.", inst.Version, inst.FormID)
	}
	schema, err := in.s.schema(ctx, version.ID)
	if err != nil {
		return err
	}
	val := schema.Validate(inst)
	if err := val.Error(inst.FormID); err != nil {
		return err
	}
	if len(schema.Entities()) > 0 {
		// Read while the tree is here: applied in the transaction that stores it.
		in.entityOps = append([]haven.EntityOp{}, schema.EntityOps(inst)...)
	}
	in.consent = schema.ConsentOutcome(inst)
	in.start, in.end = schema.DeviceTimes(inst)
	in.subject = schema.SubjectID(inst)
	meta := *inst
	meta.Root = nil
	in.xml, in.inst, in.form, in.version, in.val, in.schema = b, &meta, form, version, val, schema
	in.expected = map[string]bool{}
	for _, f := range val.Files {
		in.expected[f] = true
	}
	if len(in.files) > 0 {
		// Files that arrived before the XML: drop those already stored.
		if err := in.loadKnown(ctx); err != nil {
			return err
		}
		for name, blob := range in.files {
			if in.known[name] {
				in.s.blobs.Discard(ctx, blob)
				delete(in.files, name)
			}
		}
	}
	return nil
}

// String describes a receipt for logs.
func (r *Receipt) String() string {
	return fmt.Sprintf("form=%s instance=%s created=%v duplicate=%v missing=%d", r.FormID, r.InstanceID, r.Created, r.Duplicate, len(r.Missing))
}
