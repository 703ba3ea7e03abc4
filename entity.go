package haven

import "time"

// EntityList is a project's list of entities (ODK Central's "dataset"):
// households, patients, water points, followed up over time. Forms that
// save to it declare it; forms that read it get it as a CSV attachment.
type EntityList struct {
	ID               int64     `json:"-"`
	ProjectID        int64     `json:"projectId"`
	Name             string    `json:"name"`
	ApprovalRequired bool      `json:"approvalRequired"`
	CreatedAt        time.Time `json:"createdAt"`
}

// EntityProperty is a property of an entity list. Like a field, it says
// why it is kept and how sensitive it is: the strictest tier any form
// saving to it gives its field.
type EntityProperty struct {
	Name        string      `json:"name"`
	Purpose     string      `json:"purpose"`
	Sensitivity Sensitivity `json:"sensitivity"`
	CreatedAt   time.Time   `json:"publishedAt"`
}

// Entity conflicts, as ODK Central names them: an update made from an
// older version that touched different properties (soft) or the same ones
// (hard) as updates the server had taken since.
const (
	ConflictSoft = "soft"
	ConflictHard = "hard"
)

// Entity is one entity of a list, with its current version.
type Entity struct {
	ID        int64         `json:"-"`
	ListID    int64         `json:"-"`
	UUID      string        `json:"uuid"`
	Version   int64         `json:"-"`
	Conflict  *string       `json:"conflict"`
	CreatorID int64         `json:"creatorId"`
	CreatedAt time.Time     `json:"createdAt"`
	UpdatedAt *time.Time    `json:"updatedAt"`
	DeletedAt *time.Time    `json:"deletedAt"`
	Current   EntityVersion `json:"currentVersion"`
	KeySlot   int64         `json:"-"`
}

// EntityVersion is one version of an entity: what it held after a
// submission or an API call changed it.
type EntityVersion struct {
	Version     int64  `json:"version"`
	BaseVersion *int64 `json:"baseVersion"`
	// TrunkVersion and BranchID place an update made offline;
	// BranchBaseVersion is its baseVersion within the branch.
	TrunkVersion      *int64  `json:"trunkVersion"`
	BranchID          *string `json:"branchId"`
	BranchBaseVersion *int64  `json:"branchBaseVersion"`
	Label             string  `json:"label"`
	// Data holds every property's value after this version; Received what
	// the version itself set.
	Data                  map[string]string `json:"data"`
	Received              map[string]string `json:"dataReceived"`
	ConflictingProperties []string          `json:"conflictingProperties"`
	// Source is "submission" or "api"; SubmissionID and InstanceID name the
	// submission that made it.
	Source       string    `json:"-"`
	SubmissionID int64     `json:"-"`
	InstanceID   string    `json:"-"`
	CreatorID    int64     `json:"creatorId"`
	CreatedAt    time.Time `json:"createdAt"`
	Current      bool      `json:"current"`
	Conflict     *string   `json:"conflict"`
}

// EntityOp is what a submission (or an API call) asks of one entity.
type EntityOp struct {
	Dataset        string
	UUID           string
	Create, Update bool
	// BaseVersion is the version the update was made from; TrunkVersion
	// and BranchID place an offline update (0 and "" when absent).
	BaseVersion, TrunkVersion int64
	BranchID                  string
	Label                     string
	HasLabel                  bool
	// Values are the properties the submission carries (an empty answer
	// included: it clears the property).
	Values map[string]string
	// Problem says why the op cannot be applied ("" when it can).
	Problem string
}
