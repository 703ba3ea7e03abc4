package haven

import "time"

// AuditEvent is one entry of the audit trail: who did what to which object,
// when, from where, and how it ended. It names objects by id and never holds
// a field's value.
type AuditEvent struct {
	ID        int64          `json:"id"`
	At        time.Time      `json:"loggedAt"`
	ActorID   int64          `json:"actorId,omitempty"`
	Actor     string         `json:"actor"`
	Action    string         `json:"action"`
	ProjectID int64          `json:"projectId,omitempty"`
	Object    string         `json:"object"`
	Address   string         `json:"address"`
	Outcome   string         `json:"outcome"` // ok, or the error code
	Details   map[string]any `json:"details,omitempty"`

	// Recorded is set by a layer that wrote the event in its own
	// transaction, with the change it describes.
	Recorded bool `json:"-"`
}
