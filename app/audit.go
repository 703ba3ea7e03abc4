package app

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
)

// The audit trail. Every use case that changes something or reads collected
// data writes one event, allowed or refused: who, what (ids, never values),
// from which address and how it ended. Writes record their event in the
// transaction of the change; reads record theirs before the first byte of
// collected data goes out, on a context the client cannot cancel, so an
// abandoned download still leaves its trace.

type clientKey struct{}

// WithClient returns ctx carrying the address of the client a request came
// from, for the audit trail.
func WithClient(ctx context.Context, address string) context.Context {
	return context.WithValue(ctx, clientKey{}, address)
}

func clientAddress(ctx context.Context) string {
	a, _ := ctx.Value(clientKey{}).(string)
	return a
}

// event starts the audit event of a use case.
func (s *Service) event(ctx context.Context, p *haven.Principal, action string, projectID int64, object string) *haven.AuditEvent {
	e := &haven.AuditEvent{Action: action, ProjectID: projectID, Object: object, Address: clientAddress(ctx)}
	if p != nil {
		e.ActorID, e.Actor = p.ActorID, p.Name
	}
	return e
}

// record writes e with the outcome of err, unless a transaction already
// wrote it with the change it describes. The client going away does not
// stop it.
func (s *Service) record(ctx context.Context, e *haven.AuditEvent, err error) {
	if e == nil || e.Recorded {
		return
	}
	e.Outcome = outcome(err)
	if lerr := s.audit.Log(context.WithoutCancel(ctx), e); lerr != nil {
		s.log.Error("audit event not written", "action", e.Action, "object", e.Object, "err", lerr)
	}
}

// outcome is "ok" or what went wrong, as an error code.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return haven.ErrorCode(err)
}

// detail adds a detail to an event.
func detail(e *haven.AuditEvent, key string, value any) {
	if e.Details == nil {
		e.Details = map[string]any{}
	}
	e.Details[key] = value
}

// Objects are named by ids, in one shape: project/1/form/f/submission/uuid:x/file/p.jpg.
func objProject(projectID int64) string { return fmt.Sprintf("project/%d", projectID) }

func objForm(projectID int64, xmlFormID string) string {
	return objProject(projectID) + "/form/" + xmlFormID
}

func objSubmission(projectID int64, xmlFormID, instanceID string) string {
	return objForm(projectID, xmlFormID) + "/submission/" + instanceID
}

func objActor(actorID int64) string { return fmt.Sprintf("actor/%d", actorID) }

// RefuseRequest records a request refused before it reached a use case (an
// address outside an allowlist, credentials that do not hold): the route
// and why, never what the request carried.
func (s *Service) RefuseRequest(ctx context.Context, p *haven.Principal, projectID int64, method, route, why string, err error) {
	e := s.event(ctx, p, "request.refused", projectID, "")
	if projectID > 0 {
		e.Object = objProject(projectID)
	}
	e.Details = map[string]any{"refused": why, "method": method, "route": route}
	s.record(ctx, e, err)
}

// AuditFilter selects audit events; zero fields select everything.
type AuditFilter = storage.AuditFilter

// Verification is the result of checking the audit chain.
type Verification = storage.Verification

// ListAudit lists audit events, newest first: the whole trail for site
// administrators, one project's events for those with the right to read
// them there. The listing is itself audited, with its filter.
func (s *Service) ListAudit(ctx context.Context, p *haven.Principal, f AuditFilter) (_ []haven.AuditEvent, err error) {
	e := s.event(ctx, p, "audit.list", f.ProjectID, "")
	e.Details = map[string]any{"filter": auditQuery(f)}
	defer func() { s.record(ctx, e, err) }()
	if !p.Admin {
		if f.ProjectID == 0 {
			return nil, admin(p)
		}
		if err := s.authorize(p, haven.ActionAuditRead, f.ProjectID); err != nil {
			return nil, err
		}
	}
	return s.audit.List(ctx, f)
}

// auditQuery writes a filter as the query string it came in.
func auditQuery(f AuditFilter) string {
	q := url.Values{}
	if f.Action != "" {
		q.Set("action", f.Action)
	}
	if f.ActorID != 0 {
		q.Set("actor", fmt.Sprint(f.ActorID))
	}
	if f.ProjectID != 0 {
		q.Set("projectId", fmt.Sprint(f.ProjectID))
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format("2006-01-02T15:04:05Z07:00"))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format("2006-01-02T15:04:05Z07:00"))
	}
	if f.Limit != 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	if f.Offset != 0 {
		q.Set("offset", fmt.Sprint(f.Offset))
	}
	return q.Encode()
}

// VerifyAudit checks the audit chain for a site administrator, and names
// the first broken event.
func (s *Service) VerifyAudit(ctx context.Context, p *haven.Principal) (_ *Verification, err error) {
	e := s.event(ctx, p, "audit.verify", 0, "")
	defer func() { s.record(ctx, e, err) }()
	if err := admin(p); err != nil {
		return nil, err
	}
	v, err := s.st.VerifyAudit(ctx)
	if err == nil && !v.OK {
		s.log.Error("audit chain broken", "at", v.Broken, "reason", v.Reason)
	}
	return v, err
}
