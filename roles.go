package haven

import "fmt"

// Role system names, as ODK Central spells them where Central has the role.
const (
	RoleAdmin        = "admin"        // site administrator: every right everywhere
	RoleManager      = "manager"      // project lead: runs the project, its people and its data
	RoleFormDesigner = "formdesigner" // form designer: writes and publishes forms; sees no data
	RoleDataManager  = "datamanager"  // data manager: reads, exports, corrects and erases data
	RoleViewer       = "viewer"       // viewer: aggregated figures only, no raw data
	RoleFormFill     = "formfill"     // data collector: lists forms and submits with a username and password
	RoleAppUser      = "app-user"     // a device token: lists forms and submits in its one project
)

// Action is something a principal may or may not do within a project.
type Action string

const (
	ActionProjectRead      Action = "project.read"
	ActionProjectUpdate    Action = "project.update" // end date, retention, legal hold
	ActionFormRead         Action = "form.read"      // form definitions, fields and media, over REST
	ActionFormWrite        Action = "form.write"     // drafts, publishing, state
	ActionDeviceForms      Action = "device.forms"   // formList, form download, manifest, media
	ActionSubmit           Action = "submission.create"
	ActionSubmissionRead   Action = "submission.read"   // raw data: submissions, files, raw exports
	ActionSubmissionUpdate Action = "submission.update" // review states, comments, edits and files over REST
	ActionSubmissionDelete Action = "submission.delete" // erasure of one submission, consent withdrawal
	ActionAggregate        Action = "aggregate.read"    // aggregated figures with small-cell suppression
	ActionSubjectRequest   Action = "subject.request"   // data subject access, correction, erasure, objection
	ActionAppUserManage    Action = "appuser.manage"
	ActionAssignmentManage Action = "assignment.manage" // roles and clearances of the project's users
	ActionAuditRead        Action = "audit.read"        // the project's audit events
)

// rights is the one table of what each role may do within a project. A site
// administrator may do everything everywhere and is not listed. Which
// fields a reader sees within these rights is decided by clearance.
var rights = map[string]map[Action]bool{
	RoleManager: {ActionProjectRead: true, ActionProjectUpdate: true, ActionFormRead: true, ActionFormWrite: true,
		ActionDeviceForms: true, ActionSubmit: true, ActionSubmissionRead: true, ActionSubmissionUpdate: true, ActionSubmissionDelete: true, ActionAggregate: true,
		ActionSubjectRequest: true, ActionAppUserManage: true, ActionAssignmentManage: true, ActionAuditRead: true},
	RoleFormDesigner: {ActionProjectRead: true, ActionFormRead: true, ActionFormWrite: true, ActionDeviceForms: true},
	RoleDataManager: {ActionProjectRead: true, ActionFormRead: true, ActionSubmissionRead: true, ActionSubmissionUpdate: true, ActionSubmissionDelete: true,
		ActionAggregate: true, ActionSubjectRequest: true},
	RoleViewer:   {ActionProjectRead: true, ActionFormRead: true, ActionAggregate: true},
	RoleFormFill: {ActionProjectRead: true, ActionDeviceForms: true, ActionSubmit: true},
	RoleAppUser:  {ActionDeviceForms: true, ActionSubmit: true},
}

// Roles lists the roles that can be assigned within a project, in the
// order of the rights table in the README.
var Roles = []string{RoleManager, RoleFormDesigner, RoleDataManager, RoleViewer, RoleFormFill}

// RoleExists reports whether name is a role that can be assigned within a project.
func RoleExists(name string) bool {
	_, ok := rights[name]
	return ok && name != RoleAppUser
}

// RoleCan reports whether role grants action (for the rights table in docs and tests).
func RoleCan(role string, action Action) bool { return rights[role][action] }

// Principal is who is making a request, as authentication established it.
type Principal struct {
	ActorID int64
	Type    string // ActorUser or ActorFieldKey
	Name    string // email for users, display name for app users
	Admin   bool
	// Roles maps a project id to the roles held in it. An app user holds
	// RoleAppUser in its own project only.
	Roles map[int64][]string
	// Clearances maps a project id to the most sensitive tier the user may
	// read there; public where none was granted. Administrators read every tier.
	Clearances map[int64]Sensitivity
}

// Can reports whether p may perform action in the project projectID.
func (p *Principal) Can(action Action, projectID int64) bool {
	if p == nil {
		return false
	}
	if p.Admin {
		return true
	}
	for _, r := range p.Roles[projectID] {
		if rights[r][action] {
			return true
		}
	}
	return false
}

// Member reports whether p holds a role in the project (a site
// administrator holds every one).
func (p *Principal) Member(projectID int64) bool {
	return p != nil && (p.Admin || len(p.Roles[projectID]) > 0)
}

// Clearance is the most sensitive tier p may read in the project.
func (p *Principal) Clearance(projectID int64) Sensitivity {
	switch {
	case p == nil:
		return Public
	case p.Admin:
		return Level3
	}
	if c, ok := p.Clearances[projectID]; ok {
		return c
	}
	return Public
}

// Covers reports whether a reader with clearance c may read values of the
// tier: the one comparison of clearances and tiers (an undecided tier
// counts as the strictest).
func (c Sensitivity) Covers(tier Sensitivity) bool { return tier.Rank() <= c.Rank() }

// Clearances a user can be given, least to most.
var Clearances = []Sensitivity{Public, Level1, Level2, Level3}

// RoleInfo describes a role as ODK Central lists it at /v1/roles: Central
// clients look roles up by id or by system name.
type RoleInfo struct {
	ID     int64    `json:"id"`
	Name   string   `json:"name"`
	System string   `json:"system"`
	Verbs  []Action `json:"verbs"`
}

// roleIDs numbers the roles as Central numbers the ones it shares with
// Haven (admin 1, app user 2, manager 5, viewer 6, data collector 7);
// Haven's own roles come after Central's.
var roleIDs = []struct {
	id           int64
	system, name string
}{
	{1, RoleAdmin, "Administrator"},
	{2, "app_user", "App User"},
	{5, RoleManager, "Project Manager"},
	{6, RoleViewer, "Project Viewer"},
	{7, RoleFormFill, "Data Collector"},
	{20, RoleFormDesigner, "Form Designer"},
	{21, RoleDataManager, "Data Manager"},
}

// RoleList lists every role with the actions it grants, as /v1/roles answers.
func RoleList() []RoleInfo {
	out := make([]RoleInfo, 0, len(roleIDs))
	for _, r := range roleIDs {
		name := r.system
		if name == "app_user" {
			name = RoleAppUser
		}
		var verbs []Action
		for _, a := range allActions {
			if name == RoleAdmin || rights[name][a] {
				verbs = append(verbs, a)
			}
		}
		out = append(out, RoleInfo{ID: r.id, Name: r.name, System: r.system, Verbs: verbs})
	}
	return out
}

// allActions lists every action, in the order of the rights table.
var allActions = []Action{ActionProjectRead, ActionProjectUpdate, ActionFormRead, ActionFormWrite, ActionDeviceForms,
	ActionSubmit, ActionSubmissionRead, ActionSubmissionUpdate, ActionSubmissionDelete, ActionAggregate, ActionSubjectRequest,
	ActionAppUserManage, ActionAssignmentManage, ActionAuditRead}

// LookupRole finds a role by Central's numeric id or by its system name
// (Haven's spelling or Central's) and returns Haven's name for it.
func LookupRole(ref string) (RoleInfo, string, bool) {
	for _, r := range RoleList() {
		if ref == r.System || ref == fmt.Sprint(r.ID) || (r.System == "app_user" && ref == RoleAppUser) {
			name := r.System
			if name == "app_user" {
				name = RoleAppUser
			}
			return r, name, true
		}
	}
	return RoleInfo{}, "", false
}

// RoleID is Central's numeric id of a Haven role name.
func RoleID(name string) int64 {
	if name == RoleAppUser {
		name = "app_user"
	}
	for _, r := range roleIDs {
		if r.system == name {
			return r.id
		}
	}
	return 0
}
