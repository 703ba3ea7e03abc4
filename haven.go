// Package haven holds Haven's domain model: the plain types every other
// package speaks (projects, forms, submissions, actors), the error type that
// carries a machine code and a human message, and the table of who may do what.
//
// It imports nothing of Haven's own. Persistence lives in storage, the form
// model in formspec, device sync in sync and HTTP in server.
package haven

import (
	"encoding/json"
	"math"
	"time"
)

// Project groups forms, app users and the data collected with them.
type Project struct {
	ID          int64     `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
	// EndDate is when collection stops; the data is destroyed RetentionDays
	// after it, unless a legal hold stands.
	EndDate       *time.Time `json:"endDate"`
	RetentionDays int        `json:"retentionDays"`
	// DestructionStartedAt is set when the reaper begins; DestroyedAt when it is done.
	DestructionStartedAt *time.Time `json:"destructionStartedAt,omitempty"`
	DestroyedAt          *time.Time `json:"destroyedAt"`
	Hold                 *LegalHold `json:"legalHold"`
	// MinCellSize is k of the small-cell rule: aggregates show counts under
	// it as "<k" (default 5, never below 3).
	MinCellSize int `json:"minCellSize"`
	// APIAllow and DeviceAllow are the addresses that may reach the
	// project through the API and console, and through device endpoints
	// (empty: any address the site allows).
	APIAllow    Allowlist `json:"apiAllow"`
	DeviceAllow Allowlist `json:"deviceAllow"`
	// Archived projects are kept but set aside, as in ODK Central.
	Archived bool `json:"archived"`
	// KeyID is ODK Central's managed-encryption key: always null, as Haven
	// encrypts every project at rest itself.
	KeyID     *int64     `json:"keyId"`
	DeletedAt *time.Time `json:"deletedAt"`
}

// LegalHold defers a project's destruction while it stands.
type LegalHold struct {
	Reason    string    `json:"reason"`
	Reference string    `json:"reference"`
	PlacedBy  int64     `json:"placedBy"`
	PlacedAt  time.Time `json:"placedAt"`
}

// DestructionDate is when the project's data is due for destruction: the
// end date plus the retention period; nil without an end date.
func (p *Project) DestructionDate() *time.Time {
	if p.EndDate == nil {
		return nil
	}
	d := p.EndDate.AddDate(0, 0, p.RetentionDays)
	return &d
}

// DaysLeft is how many days remain before the destruction date, counting a
// part day as a day, and 0 once it has come; nil without an end date.
func (p *Project) DaysLeft(now time.Time) *int {
	d := p.DestructionDate()
	if d == nil {
		return nil
	}
	days := max(0, int(math.Ceil(d.Sub(now).Hours()/24)))
	return &days
}

// Closed reports whether devices may no longer fetch forms or submit: the
// end date has come, or destruction has begun.
func (p *Project) Closed(now time.Time) bool {
	return p.DestructionStartedAt != nil || (p.EndDate != nil && !now.Before(*p.EndDate))
}

// DueForDestruction reports whether the reaper should destroy the project now.
func (p *Project) DueForDestruction(now time.Time) bool {
	d := p.DestructionDate()
	return p.DestroyedAt == nil && p.Hold == nil && (p.DestructionStartedAt != nil || (d != nil && !now.Before(*d)))
}

// Actor types, as ODK Central names them.
const (
	ActorUser     = "user"
	ActorFieldKey = "field_key" // an app user: a device credential bound to one project
)

// User is a person who logs in with an email and a password.
type User struct {
	ID          int64      `json:"id"` // the actor id
	Type        string     `json:"type"`
	Email       string     `json:"email"`
	DisplayName string     `json:"displayName"`
	Admin       bool       `json:"admin"`
	CreatedAt   time.Time  `json:"createdAt"`
	UpdatedAt   time.Time  `json:"updatedAt"`
	DeletedAt   *time.Time `json:"deletedAt"`
}

// AppUser is a device credential ("app user" in ODK Central): a bearer token
// that lets ODK Collect fetch the project's forms and submit to it.
type AppUser struct {
	ID          int64      `json:"id"` // the actor id
	Type        string     `json:"type"`
	ProjectID   int64      `json:"projectId"`
	DisplayName string     `json:"displayName"`
	CreatedAt   time.Time  `json:"createdAt"`
	UpdatedAt   time.Time  `json:"updatedAt"`
	RevokedAt   *time.Time `json:"revokedAt"`
	// DeletedAt is RevokedAt under ODK Central's name.
	DeletedAt *time.Time `json:"deletedAt"`
	// Token is the device's credential, for those who manage app users
	// (sealed at rest); null once revoked.
	Token *string `json:"token"`
}

// Form states, as in ODK Central: open forms are listed and take submissions,
// closing forms are not listed but still take them, closed forms do neither.
const (
	FormOpen    = "open"
	FormClosing = "closing"
	FormClosed  = "closed"
)

// Form is a form identified by its xmlFormId within a project. Its published
// versions are immutable; at most one draft is being prepared beside them.
type Form struct {
	ID          int64      `json:"-"`
	ProjectID   int64      `json:"projectId"`
	XMLFormID   string     `json:"xmlFormId"`
	Name        string     `json:"name"`
	Version     string     `json:"version"`
	Hash        string     `json:"hash"` // hex MD5 of the XML served for the current version
	State       string     `json:"state"`
	CreatedAt   time.Time  `json:"createdAt"`
	UpdatedAt   time.Time  `json:"updatedAt"`
	PublishedAt *time.Time `json:"publishedAt"`
	// EnketoID and KeyID are ODK Central's: always null, as Haven runs no
	// Enketo and refuses ODK-encrypted forms.
	EnketoID     *string `json:"enketoId"`
	EnketoOnceID *string `json:"enketoOnceId"`
	KeyID        *int64  `json:"keyId"`

	CurrentVersionID int64 `json:"-"` // 0 while the form has never been published
	DraftVersionID   int64 `json:"-"` // 0 when there is no draft
}

// FormVersion is one version of a form's XForm. Once published it never changes.
type FormVersion struct {
	ID          int64      `json:"-"`
	FormID      int64      `json:"-"`
	ProjectID   int64      `json:"projectId"`
	XMLFormID   string     `json:"xmlFormId"`
	Name        string     `json:"name"`
	Version     string     `json:"version"`
	Hash        string     `json:"hash"`
	XML         []byte     `json:"-"`
	CreatedAt   time.Time  `json:"createdAt"`
	PublishedAt *time.Time `json:"publishedAt"`
}

// FormAttachment is a media file a form version expects (an image, a CSV for
// pulldata, an external instance), uploaded or still missing.
type FormAttachment struct {
	FormVersionID int64      `json:"-"`
	Name          string     `json:"name"`
	Type          string     `json:"type"` // image, audio, video, file
	Exists        bool       `json:"exists"`
	Hash          string     `json:"hash,omitempty"` // hex MD5 of the content
	Size          int64      `json:"size,omitempty"`
	BlobID        int64      `json:"-"`
	UpdatedAt     *time.Time `json:"updatedAt"`
	// EntityList names the entity list served as this file (a CSV the
	// form reads, named after a list of its project, with no file
	// uploaded in its place); "" for a plain file.
	EntityList string `json:"-"`
	// EntityListApproval says the list makes entities only on approval
	// (Central's approvalEntityList).
	EntityListApproval bool `json:"-"`
}

// MarshalJSON writes a form attachment as ODK Central does: hash null until
// the file is uploaded, and blobExists and datasetExists beside exists
// (datasetExists: the file is an entity list).
func (a FormAttachment) MarshalJSON() ([]byte, error) {
	type plain FormAttachment
	var hash *string
	if a.Hash != "" {
		hash = &a.Hash
	}
	return json.Marshal(struct {
		plain
		Hash          *string `json:"hash"`
		BlobExists    bool    `json:"blobExists"`
		DatasetExists bool    `json:"datasetExists"`
	}{plain(a), hash, a.Exists && a.EntityList == "", a.EntityList != ""})
}

// Submission is one filled-in form: the logical record that edits version.
// InstanceID is the instanceID of its first version, as in ODK Central.
type Submission struct {
	ID          int64             `json:"-"`
	FormID      int64             `json:"-"`
	InstanceID  string            `json:"instanceId"`
	SubmitterID int64             `json:"submitterId"`
	DeviceID    string            `json:"deviceId"`
	ReviewState *string           `json:"reviewState"`
	UserAgent   *string           `json:"userAgent"`
	CreatedAt   time.Time         `json:"createdAt"`
	UpdatedAt   *time.Time        `json:"updatedAt"`
	Current     SubmissionVersion `json:"currentVersion"`
	// FormVersionIDs are the form versions the submission's versions were
	// filled in with: it is read under the strictest tier any of them (or
	// the form's current version) gives a field.
	FormVersionIDs []int64 `json:"-"`
}

// SubmissionVersion is one version of a submission's XML: the first, or an
// edit that named the previous one in meta/deprecatedID.
type SubmissionVersion struct {
	ID            int64     `json:"-"`
	SubmissionID  int64     `json:"-"`
	FormVersionID int64     `json:"-"`
	InstanceID    string    `json:"instanceId"`
	DeprecatedID  string    `json:"deprecatedId,omitempty"`
	InstanceName  string    `json:"instanceName"`
	SubmitterID   int64     `json:"submitterId"`
	DeviceID      string    `json:"deviceId"`
	FormVersion   string    `json:"formVersion"`
	Current       bool      `json:"current"`
	CreatedAt     time.Time `json:"createdAt"`
	// AttachmentsPresent and AttachmentsExpected count the files the XML
	// names; a version is complete when both are equal.
	AttachmentsPresent  int `json:"attachmentsPresent"`
	AttachmentsExpected int `json:"attachmentsExpected"`
	// EditReason is why a version was made on the server (a correction).
	EditReason string `json:"editReason,omitempty"`
}

// Attachment is a file a submission version's XML names in a binary field.
type Attachment struct {
	Name   string `json:"name"`
	Exists bool   `json:"exists"`
	Size   int64  `json:"size,omitempty"`
	BlobID int64  `json:"-"`
}
