package haven

// Role system names, as ODK Central spells them where Central has the role.
const (
	RoleAdmin    = "admin"    // site administrator: every right everywhere
	RoleFormFill = "formfill" // data collector: lists forms and submits with a username and password
	RoleAppUser  = "app-user" // a device token: lists forms and submits in its one project
)

// Action is something a principal may or may not do within a project.
type Action string

const (
	ActionProjectRead      Action = "project.read"
	ActionProjectUpdate    Action = "project.update"
	ActionFormRead         Action = "form.read"    // form definitions and media, over REST
	ActionFormWrite        Action = "form.write"   // drafts, publishing, state
	ActionDeviceForms      Action = "device.forms" // formList, form download, manifest, media
	ActionSubmit           Action = "submission.create"
	ActionSubmissionRead   Action = "submission.read"
	ActionSubmissionDelete Action = "submission.delete" // erasure: administrators only for now
	ActionSubjectRequest   Action = "subject.request"   // data subject access, correction, erasure, objection
	ActionAppUserManage    Action = "appuser.manage"
	ActionAssignmentManage Action = "assignment.manage"
)

// rights is the one table of what each role may do within a project. A site
// administrator may do everything everywhere and is not listed.
var rights = map[string]map[Action]bool{
	RoleFormFill: {ActionProjectRead: true, ActionDeviceForms: true, ActionSubmit: true},
	RoleAppUser:  {ActionDeviceForms: true, ActionSubmit: true},
}

// RoleExists reports whether name is a role that can be assigned within a project.
func RoleExists(name string) bool {
	_, ok := rights[name]
	return ok && name != RoleAppUser
}

// Principal is who is making a request, as authentication established it.
type Principal struct {
	ActorID int64
	Type    string // ActorUser or ActorFieldKey
	Name    string // email for users, display name for app users
	Admin   bool
	// Roles maps a project id to the role held in it. An app user holds
	// RoleAppUser in its own project only.
	Roles map[int64]string
}

// Can reports whether p may perform action in the project projectID.
func (p *Principal) Can(action Action, projectID int64) bool {
	if p == nil {
		return false
	}
	if p.Admin {
		return true
	}
	return rights[p.Roles[projectID]][action]
}
