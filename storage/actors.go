package storage

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	gosync "sync"
	"time"

	"github.com/haven-org/haven"
	"golang.org/x/crypto/argon2"
)

// DigestRealm is the HTTP Digest realm. The stored HA1 of every user depends
// on it: changing it means every user must set their password again.
const DigestRealm = "Haven"

// argon2id parameters (OWASP's recommendation: 19 MiB, 2 passes, 1 lane).
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

// MinPasswordLength is the shortest password Haven accepts.
const MinPasswordLength = 10

// argonSlots bounds how many password hashes run at once: each takes 19 MiB,
// and a crowd of logins (or a flood of wrong ones) must not take the memory.
var argonSlots = make(chan struct{}, 4)

func argonKey(password string, salt []byte, t, m uint32, p uint8, n uint32) []byte {
	argonSlots <- struct{}{}
	defer func() { <-argonSlots }()
	return argon2.IDKey([]byte(password), salt, t, m, p, n)
}

// HashPassword returns an argon2id hash of password in the PHC string format.
func HashPassword(password string) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	sum := argonKey(password, salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(sum))
}

// CheckPassword reports whether password matches a hash made by HashPassword.
func CheckPassword(hash, password string) bool {
	var v, m, t int
	var p uint8
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil {
		return false
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	sum, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(sum) == 0 {
		return false
	}
	if m > 64*1024 || t > 10 {
		return false // not a hash Haven made: refuse rather than spend unbounded memory
	}
	got := argonKey(password, salt, uint32(t), uint32(m), p, uint32(len(sum)))
	return subtle.ConstantTimeCompare(got, sum) == 1
}

// GeneratePassword returns a random password of 20 characters.
func GeneratePassword() string {
	const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 20)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func digestHA1(email, password string) []byte {
	sum := md5.Sum([]byte(email + ":" + DigestRealm + ":" + password))
	return sum[:]
}

// ValidatePassword says what is wrong with a password, if anything.
func ValidatePassword(password string) error {
	if len([]rune(password)) < MinPasswordLength {
		return haven.Errorf(haven.EINVALID, "The password is too short: use at least %d characters.", MinPasswordLength)
	}
	return nil
}

// Users reads and writes users, app users, sessions and role assignments.
type Users struct {
	DB   *DB
	Keys *Keyring

	// Device tokens checked recently, so the HEAD and POST of every
	// submission do not each query the database. Revoking clears it.
	tokens ttlCache[string, *haven.Principal]
	// Basic credentials verified recently, by a keyed hash.
	basic       ttlCache[string, int64]
	basicOnce   gosync.Once
	basicSecret []byte
}

// Create adds a user. The password is kept only as an argon2id hash, plus the
// Digest HA1 (sealed by the master key) that Digest authentication needs.
func (u *Users) Create(ctx context.Context, email, password, displayName string, admin bool) (*haven.User, error) {
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email {
		return nil, haven.Errorf(haven.EINVALID, "%q is not an email address: give one like name@example.org.", email)
	}
	if err := ValidatePassword(password); err != nil {
		return nil, err
	}
	if displayName == "" {
		displayName = email
	}
	hash := HashPassword(password)
	ha1 := u.Keys.SealMaster(digestHA1(strings.ToLower(email), password), "digest "+strings.ToLower(email))
	var user *haven.User
	err = u.DB.Write(ctx, func(tx *Tx) error {
		var n int
		tx.QueryRow(`SELECT count(*) FROM users WHERE email = ?`, email).Scan(&n)
		if n > 0 {
			return haven.Errorf(haven.EDUPLICATE, "A user with the email %s already exists.", email)
		}
		id, err := tx.insertActor(haven.ActorUser, displayName)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO users (actor_id, email, password_hash, digest_ha1, admin) VALUES (?, ?, ?, ?, ?)`,
			id, strings.ToLower(email), hash, ha1, admin); err != nil {
			return err
		}
		user = &haven.User{ID: id, Type: haven.ActorUser, Email: strings.ToLower(email), DisplayName: displayName, Admin: admin, CreatedAt: tx.Now(), UpdatedAt: tx.Now()}
		return nil
	})
	return user, err
}

func (tx *Tx) insertActor(typ, displayName string) (int64, error) {
	var id int64
	err := tx.Insert(&id, `INSERT INTO actors (type, display_name, created_at, updated_at) VALUES (?, ?, ?, ?)`,
		typ, displayName, ms(tx.Now()), ms(tx.Now()))
	return id, err
}

const userColumns = `a.id, u.email, a.display_name, u.admin, a.created_at, a.updated_at`

func scanUser(row interface{ Scan(...any) error }) (*haven.User, error) {
	var user haven.User
	var created, updated int64
	if err := row.Scan(&user.ID, &user.Email, &user.DisplayName, &user.Admin, &created, &updated); err != nil {
		return nil, err
	}
	user.Type = haven.ActorUser
	user.CreatedAt, user.UpdatedAt = fromMS(created), fromMS(updated)
	return &user, nil
}

// Authenticate returns the user with this email and password, or an
// EUNAUTHORIZED error that does not say which of the two was wrong.
func (u *Users) Authenticate(ctx context.Context, email, password string) (*haven.User, error) {
	row := u.DB.read.QueryRowContext(ctx, `SELECT `+userColumns+`, u.password_hash FROM users u JOIN actors a ON a.id = u.actor_id
		WHERE u.email = ? AND a.deleted_at IS NULL`, strings.ToLower(email))
	var user haven.User
	var created, updated int64
	var hash string
	err := row.Scan(&user.ID, &user.Email, &user.DisplayName, &user.Admin, &created, &updated, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		dummyOnce.Do(func() { dummyHash = HashPassword("no such user") })
		CheckPassword(dummyHash, password) // spend the time of one real check: no tell
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "The email or password is wrong.")
	} else if err != nil {
		return nil, err
	}
	if !CheckPassword(hash, password) {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "The email or password is wrong.")
	}
	user.Type = haven.ActorUser
	user.CreatedAt, user.UpdatedAt = fromMS(created), fromMS(updated)
	return &user, nil
}

// AuthenticateBasic is Authenticate for HTTP Basic, which devices send with
// every request: a credential verified in the last few minutes is accepted
// without hashing the password again (argon2id costs 19 MiB and tens of
// milliseconds). Only a keyed hash of the credential is remembered.
func (u *Users) AuthenticateBasic(ctx context.Context, email, password string) (int64, error) {
	m := hmac.New(sha256.New, u.basicKey())
	m.Write([]byte(strings.ToLower(email) + "\x00" + password))
	k := string(m.Sum(nil))
	if id, ok := u.basic.get(k); ok {
		return id, nil
	}
	gen := u.basic.generation()
	user, err := u.Authenticate(ctx, email, password)
	if err != nil {
		return 0, err
	}
	u.basic.put(k, user.ID, gen)
	return user.ID, nil
}

func (u *Users) basicKey() []byte {
	u.basicOnce.Do(func() {
		u.basicSecret = make([]byte, 32)
		rand.Read(u.basicSecret)
	})
	return u.basicSecret
}

// dummyHash is checked against for unknown emails, so they take as long as known ones.
var (
	dummyOnce gosync.Once
	dummyHash string
)

// DigestHA1 returns a live user's id and Digest HA1, by email.
func (u *Users) DigestHA1(ctx context.Context, email string) (int64, []byte, error) {
	var id int64
	var sealed []byte
	email = strings.ToLower(email)
	err := u.DB.read.QueryRowContext(ctx, `SELECT a.id, u.digest_ha1 FROM users u JOIN actors a ON a.id = u.actor_id
		WHERE u.email = ? AND a.deleted_at IS NULL`, email).Scan(&id, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, haven.Errorf(haven.EUNAUTHORIZED, "The username or password is wrong.")
	} else if err != nil {
		return 0, nil, err
	}
	if len(sealed) == 0 {
		return 0, nil, haven.Errorf(haven.EUNAUTHORIZED, "This user's email changed since their password was last set, so Digest cannot check it: set the password again.")
	}
	ha1, err := u.Keys.OpenMaster(sealed, "digest "+email)
	return id, ha1, err
}

// Get returns a live user by id.
func (u *Users) Get(ctx context.Context, id int64) (*haven.User, error) {
	user, err := scanUser(u.DB.read.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users u JOIN actors a ON a.id = u.actor_id
		WHERE a.id = ? AND a.deleted_at IS NULL`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("User %d", id))
	}
	return user, err
}

// List returns every live user, by email.
func (u *Users) List(ctx context.Context) ([]*haven.User, error) {
	rows, err := u.DB.read.QueryContext(ctx, `SELECT `+userColumns+` FROM users u JOIN actors a ON a.id = u.actor_id
		WHERE a.deleted_at IS NULL ORDER BY u.email`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	users := []*haven.User{}
	for rows.Next() {
		user, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		users = append(users, user)
	}
	return users, rows.Err()
}

// CountAdmins returns how many live administrators there are.
func (u *Users) CountAdmins(ctx context.Context) (int, error) {
	var n int
	err := u.DB.read.QueryRowContext(ctx, `SELECT count(*) FROM users u JOIN actors a ON a.id = u.actor_id
		WHERE u.admin = 1 AND a.deleted_at IS NULL`).Scan(&n)
	return n, err
}

// Principal loads who a live user is and which roles it holds.
func (u *Users) Principal(ctx context.Context, actorID int64) (*haven.Principal, error) {
	user, err := u.Get(ctx, actorID)
	if err != nil {
		return nil, err
	}
	p := &haven.Principal{ActorID: user.ID, Type: haven.ActorUser, Name: user.Email, Admin: user.Admin, Roles: map[int64][]string{},
		Clearances: map[int64]haven.Sensitivity{}}
	rows, err := u.DB.read.QueryContext(ctx, `SELECT project_id, role FROM assignments WHERE actor_id = ?`, actorID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var pid int64
		var role string
		if err := rows.Scan(&pid, &role); err != nil {
			return nil, err
		}
		p.Roles[pid] = append(p.Roles[pid], role)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	crows, err := u.DB.read.QueryContext(ctx, `SELECT project_id, clearance FROM clearances WHERE actor_id = ?`, actorID)
	if err != nil {
		return nil, err
	}
	defer crows.Close()
	for crows.Next() {
		var pid int64
		var c string
		if err := crows.Scan(&pid, &c); err != nil {
			return nil, err
		}
		p.Clearances[pid] = haven.Sensitivity(c)
	}
	return p, crows.Err()
}

// CreateSession records a session for a user, until expires (Unix ms), with
// the SHA-256 of its refresh token (nil: none).
func (u *Users) CreateSession(ctx context.Context, id string, actorID int64, expires int64, refreshHash ...[]byte) error {
	var rh []byte
	if len(refreshHash) > 0 {
		rh = refreshHash[0]
	}
	return u.DB.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`INSERT INTO sessions (id, actor_id, created_at, expires_at, refresh_hash) VALUES (?, ?, ?, ?, ?)`, id, actorID, ms(tx.Now()), expires, rh)
		return err
	})
}

// SessionActive reports whether the session id exists for the actor, is
// not revoked and has not expired.
func (u *Users) SessionActive(ctx context.Context, id string, actorID int64) (bool, error) {
	var n int
	err := u.DB.read.QueryRowContext(ctx, `SELECT count(*) FROM sessions WHERE id = ? AND actor_id = ? AND revoked_at IS NULL AND expires_at > ?`,
		id, actorID, ms(u.DB.Now())).Scan(&n)
	return n > 0, err
}

// RefreshSession swaps a live session's refresh token (by its SHA-256) for
// a new one and returns the session's user and end (Unix ms). The token the
// session had before its last refresh was copied if it comes back: the
// session is ended. Any other token is refused and ends nothing. The user
// is returned whenever the session is known, for the audit trail.
func (u *Users) RefreshSession(ctx context.Context, id string, oldHash, newHash []byte) (actorID, expires int64, err error) {
	ended := false
	err = u.DB.Write(ctx, func(tx *Tx) error {
		var current, previous []byte
		var revoked sql.NullInt64
		err := tx.QueryRow(`SELECT s.actor_id, s.expires_at, s.refresh_hash, s.previous_refresh_hash, s.revoked_at FROM sessions s
			JOIN actors a ON a.id = s.actor_id WHERE s.id = ? AND a.deleted_at IS NULL`, id).Scan(&actorID, &expires, &current, &previous, &revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return haven.Errorf(haven.EUNAUTHORIZED, "This refresh token is not valid. Log in again.")
		} else if err != nil {
			return err
		}
		if revoked.Valid || expires <= ms(tx.Now()) {
			return haven.Errorf(haven.EUNAUTHORIZED, "Your session has ended (logged out or expired). Log in again.")
		}
		switch {
		case current != nil && subtle.ConstantTimeCompare(current, oldHash) == 1:
			_, err = tx.Exec(`UPDATE sessions SET refresh_hash = ?, previous_refresh_hash = ? WHERE id = ?`, newHash, current, id)
			return err
		case previous != nil && subtle.ConstantTimeCompare(previous, oldHash) == 1:
			ended = true
			_, err := tx.Exec(`UPDATE sessions SET revoked_at = ? WHERE id = ?`, ms(tx.Now()), id)
			return err
		}
		return haven.Errorf(haven.EUNAUTHORIZED, "This refresh token is not valid. Log in again.")
	})
	if err == nil && ended {
		err = haven.Errorf(haven.EUNAUTHORIZED, "This refresh token was already used, so it may have been copied: the session is ended to be safe. Log in again.")
	}
	return actorID, expires, err
}

// EndSession ends a session by its current refresh token (logging out),
// and returns its user.
func (u *Users) EndSession(ctx context.Context, id string, refreshHash []byte) (actorID int64, err error) {
	err = u.DB.Write(ctx, func(tx *Tx) error {
		var current []byte
		err := tx.QueryRow(`SELECT actor_id, refresh_hash FROM sessions WHERE id = ? AND revoked_at IS NULL`, id).Scan(&actorID, &current)
		if errors.Is(err, sql.ErrNoRows) {
			return haven.Errorf(haven.EUNAUTHORIZED, "This session has already ended, or the refresh token is not valid.")
		} else if err != nil {
			return err
		}
		if current == nil || subtle.ConstantTimeCompare(current, refreshHash) != 1 {
			return haven.Errorf(haven.EUNAUTHORIZED, "This refresh token is not the session's current one: nothing was ended.")
		}
		_, err = tx.Exec(`UPDATE sessions SET revoked_at = ? WHERE id = ?`, ms(tx.Now()), id)
		return err
	})
	return actorID, err
}

// Disable turns a user off: their sessions end at once, their password and
// Digest credentials stop working, and they no longer appear in lists. The
// user's actor stays, so the audit trail keeps naming who did what. The
// last administrator cannot be disabled.
func (u *Users) Disable(ctx context.Context, id int64) error {
	defer u.changed("basic")
	return u.DB.Write(ctx, func(tx *Tx) error {
		var admin bool
		err := tx.QueryRow(`SELECT u.admin FROM users u JOIN actors a ON a.id = u.actor_id WHERE a.id = ? AND a.deleted_at IS NULL`, id).Scan(&admin)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound(fmt.Sprintf("User %d", id))
		} else if err != nil {
			return err
		}
		if admin {
			var n int
			if err := tx.QueryRow(`SELECT count(*) FROM users u JOIN actors a ON a.id = u.actor_id WHERE u.admin = 1 AND a.deleted_at IS NULL`).Scan(&n); err != nil {
				return err
			}
			if n <= 1 {
				return haven.Errorf(haven.ECONFLICT, "User %d is the last administrator; make another administrator first.", id)
			}
		}
		now := ms(tx.Now())
		if _, err := tx.Exec(`UPDATE actors SET deleted_at = ?, updated_at = ? WHERE id = ?`, now, now, id); err != nil {
			return err
		}
		_, err = tx.Exec(`UPDATE sessions SET revoked_at = ? WHERE actor_id = ? AND revoked_at IS NULL`, now, id)
		return err
	})
}

// Assign gives a user a role in a project.
func (u *Users) Assign(ctx context.Context, projectID, actorID int64, role string) error {
	if !haven.RoleExists(role) {
		return haven.Errorf(haven.ENOTFOUND, "There is no role %q: use one of %s.", role, strings.Join(haven.Roles, ", "))
	}
	if _, err := u.Get(ctx, actorID); err != nil {
		return err
	}
	return u.DB.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`INSERT INTO assignments (actor_id, project_id, role, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT DO NOTHING`, actorID, projectID, role, ms(tx.Now()))
		return err
	})
}

// SetClearance sets the most sensitive tier a user may read in a project.
func (u *Users) SetClearance(ctx context.Context, projectID, actorID int64, clearance haven.Sensitivity, by int64) error {
	ok := false
	for _, c := range haven.Clearances {
		ok = ok || c == clearance
	}
	if !ok {
		return haven.Errorf(haven.EINVALID, "%q is not a clearance: use public, level_1, level_2 or level_3.", clearance)
	}
	if _, err := u.Get(ctx, actorID); err != nil {
		if ap, aerr := u.AppUserPrincipalByID(ctx, actorID); aerr != nil || len(ap.Roles[projectID]) == 0 {
			return err
		}
	}
	err := u.DB.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`INSERT INTO clearances (actor_id, project_id, clearance, granted_by, granted_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (actor_id, project_id) DO UPDATE SET clearance = excluded.clearance, granted_by = excluded.granted_by,
			granted_at = excluded.granted_at`, actorID, projectID, string(clearance), by, ms(tx.Now()))
		return err
	})
	if err == nil {
		u.tokens.clear() // an app user's principal carries its clearance
		u.DB.changed("tokens")
	}
	return err
}

// Clearance is a user's clearance in a project.
type Clearance struct {
	ActorID   int64             `json:"actorId"`
	Clearance haven.Sensitivity `json:"clearance"`
	GrantedBy int64             `json:"grantedBy"`
	GrantedAt time.Time         `json:"grantedAt"`
}

// Clearances lists the clearances granted in a project.
func (u *Users) Clearances(ctx context.Context, projectID int64) ([]Clearance, error) {
	rows, err := u.DB.read.QueryContext(ctx, `SELECT actor_id, clearance, granted_by, granted_at FROM clearances WHERE project_id = ? ORDER BY actor_id`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Clearance{}
	for rows.Next() {
		var c Clearance
		var at int64
		if err := rows.Scan(&c.ActorID, &c.Clearance, &c.GrantedBy, &at); err != nil {
			return nil, err
		}
		c.GrantedAt = fromMS(at)
		out = append(out, c)
	}
	return out, rows.Err()
}

// Unassign takes a role in a project away from a user.
func (u *Users) Unassign(ctx context.Context, projectID, actorID int64, role string) error {
	return u.DB.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec(`DELETE FROM assignments WHERE actor_id = ? AND project_id = ? AND role = ?`, actorID, projectID, role)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("That role assignment")
		}
		return nil
	})
}

// Assignment is a role held by an actor in a project.
type Assignment struct {
	ActorID int64  `json:"actorId"`
	RoleID  int64  `json:"roleId"` // Central's number for the role
	Role    string `json:"roleSystemName"`
}

// Assignments lists the roles held in a project.
func (u *Users) Assignments(ctx context.Context, projectID int64) ([]Assignment, error) {
	rows, err := u.DB.read.QueryContext(ctx, `SELECT actor_id, role FROM assignments WHERE project_id = ? ORDER BY actor_id, role`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Assignment{}
	for rows.Next() {
		var a Assignment
		if err := rows.Scan(&a.ActorID, &a.Role); err != nil {
			return nil, err
		}
		a.RoleID = haven.RoleID(a.Role)
		out = append(out, a)
	}
	return out, rows.Err()
}

// NewAppUserToken returns a new device token as ODK Central makes them: 48
// random bytes in base64, with '/' written '!' and '+' written '$' so the token
// sits in a URL path unescaped.
func NewAppUserToken() string {
	b := make([]byte, 48)
	rand.Read(b)
	r := strings.NewReplacer("/", "!", "+", "$")
	return r.Replace(base64.StdEncoding.EncodeToString(b))
}

func tokenHash(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// CreateAppUser makes a device credential in a project. The returned AppUser
// carries its token; only the token's hash is stored.
func (u *Users) CreateAppUser(ctx context.Context, projectID int64, displayName string) (*haven.AppUser, error) {
	displayName = strings.TrimSpace(displayName)
	if displayName == "" {
		return nil, haven.Errorf(haven.EINVALID, "An app user needs a displayName, for example the enumerator's name or the tablet's label.")
	}
	token := NewAppUserToken()
	var au *haven.AppUser
	err := u.DB.Write(ctx, func(tx *Tx) error {
		id, err := tx.insertActor(haven.ActorFieldKey, displayName)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO field_keys (actor_id, project_id, token_hash, token_sealed) VALUES (?, ?, ?, ?)`,
			id, projectID, tokenHash(token), u.Keys.SealMaster([]byte(token), tokenPurpose(id))); err != nil {
			return err
		}
		au = &haven.AppUser{ID: id, Type: haven.ActorFieldKey, ProjectID: projectID, DisplayName: displayName, CreatedAt: tx.Now(), UpdatedAt: tx.Now(), Token: &token}
		return nil
	})
	return au, err
}

func tokenPurpose(actorID int64) string { return fmt.Sprintf("app user token %d", actorID) }

// AppUserPrincipal returns the principal of a live device token.
func (u *Users) AppUserPrincipal(ctx context.Context, token string) (*haven.Principal, error) {
	if p, ok := u.tokens.get(token); ok {
		return p, nil
	}
	gen := u.tokens.generation()
	p, err := u.appUserPrincipal(ctx, token)
	if err == nil {
		u.tokens.put(token, p, gen)
	}
	return p, err
}

func (u *Users) appUserPrincipal(ctx context.Context, token string) (*haven.Principal, error) {
	var id, pid int64
	var name string
	err := u.DB.read.QueryRowContext(ctx, `SELECT a.id, a.display_name, f.project_id FROM field_keys f JOIN actors a ON a.id = f.actor_id
		WHERE f.token_hash = ? AND f.revoked_at IS NULL AND a.deleted_at IS NULL`, tokenHash(token)).Scan(&id, &name, &pid)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, haven.Errorf(haven.EFORBIDDEN, "This device's access key is not valid: it was revoked or mistyped. Ask your supervisor for a new QR code.")
	} else if err != nil {
		return nil, err
	}
	return u.fieldKeyPrincipal(ctx, id, name, pid)
}

// fieldKeyPrincipal is an app user's principal: its role in its project
// and the clearance it was given there (what its devices may hold of
// entity lists); public when none was.
func (u *Users) fieldKeyPrincipal(ctx context.Context, id int64, name string, pid int64) (*haven.Principal, error) {
	p := &haven.Principal{ActorID: id, Type: haven.ActorFieldKey, Name: name, Roles: map[int64][]string{pid: {haven.RoleAppUser}},
		Clearances: map[int64]haven.Sensitivity{}}
	var c string
	err := u.DB.read.QueryRowContext(ctx, `SELECT clearance FROM clearances WHERE actor_id = ? AND project_id = ?`, id, pid).Scan(&c)
	if err == nil {
		p.Clearances[pid] = haven.Sensitivity(c)
	} else if !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	return p, nil
}

// AppUserPrincipalByID returns the principal of a live app user by its actor id.
func (u *Users) AppUserPrincipalByID(ctx context.Context, id int64) (*haven.Principal, error) {
	var name string
	var pid int64
	err := u.DB.read.QueryRowContext(ctx, `SELECT a.display_name, f.project_id FROM field_keys f JOIN actors a ON a.id = f.actor_id
		WHERE a.id = ? AND f.revoked_at IS NULL AND a.deleted_at IS NULL`, id).Scan(&name, &pid)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("App user %d", id))
	} else if err != nil {
		return nil, err
	}
	return u.fieldKeyPrincipal(ctx, id, name, pid)
}

// AppUsers lists a project's app users, revoked ones included.
func (u *Users) AppUsers(ctx context.Context, projectID int64) ([]*haven.AppUser, error) {
	rows, err := u.DB.read.QueryContext(ctx, `SELECT a.id, a.display_name, a.created_at, a.updated_at, f.revoked_at, f.token_sealed
		FROM field_keys f JOIN actors a ON a.id = f.actor_id WHERE f.project_id = ? ORDER BY a.id`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*haven.AppUser{}
	for rows.Next() {
		au := &haven.AppUser{Type: haven.ActorFieldKey, ProjectID: projectID}
		var created, updated int64
		var revoked sql.NullInt64
		var sealed []byte
		if err := rows.Scan(&au.ID, &au.DisplayName, &created, &updated, &revoked, &sealed); err != nil {
			return nil, err
		}
		au.CreatedAt, au.UpdatedAt, au.RevokedAt = fromMS(created), fromMS(updated), fromNullMS(revoked)
		au.DeletedAt = au.RevokedAt
		if sealed != nil && au.RevokedAt == nil {
			token, err := u.Keys.OpenMaster(sealed, tokenPurpose(au.ID))
			if err != nil {
				return nil, err
			}
			t := string(token)
			au.Token = &t
		}
		out = append(out, au)
	}
	return out, rows.Err()
}

// RevokeAppUser revokes a device token at once: its next request is refused.
func (u *Users) RevokeAppUser(ctx context.Context, projectID, actorID int64) error {
	defer u.changed("tokens")
	return u.DB.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec(`UPDATE field_keys SET revoked_at = ?, token_sealed = NULL WHERE actor_id = ? AND project_id = ? AND revoked_at IS NULL`,
			ms(tx.Now()), actorID, projectID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound(fmt.Sprintf("App user %d of project %d", actorID, projectID))
		}
		_, err = tx.Exec(`UPDATE actors SET updated_at = ? WHERE id = ?`, ms(tx.Now()), actorID)
		return err
	})
}

// UpdateUser changes a live user's display name or email (nil leaves one
// as it is). The Digest credential is bound to the email, so a new email
// leaves the user without one until their password is next set: devices
// using Digest must then be given the new email and the password again.
func (u *Users) UpdateUser(ctx context.Context, id int64, displayName, email *string) (*haven.User, error) {
	if email != nil {
		addr, err := mail.ParseAddress(*email)
		if err != nil || addr.Address != *email {
			return nil, haven.Errorf(haven.EINVALID, "%q is not an email address: give one like name@example.org.", *email)
		}
	}
	if displayName != nil && strings.TrimSpace(*displayName) == "" {
		return nil, haven.Errorf(haven.EINVALID, "The display name is empty: give the name people know this user by.")
	}
	defer u.changed("basic")
	err := u.DB.Write(ctx, func(tx *Tx) error {
		var current string
		err := tx.QueryRow(`SELECT u.email FROM users u JOIN actors a ON a.id = u.actor_id WHERE a.id = ? AND a.deleted_at IS NULL`, id).Scan(&current)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound(fmt.Sprintf("User %d", id))
		} else if err != nil {
			return err
		}
		now := ms(tx.Now())
		if displayName != nil {
			if _, err := tx.Exec(`UPDATE actors SET display_name = ?, updated_at = ? WHERE id = ?`, *displayName, now, id); err != nil {
				return err
			}
		}
		if email != nil && strings.ToLower(*email) != current {
			var n int
			tx.QueryRow(`SELECT count(*) FROM users WHERE email = ?`, strings.ToLower(*email)).Scan(&n)
			if n > 0 {
				return haven.Errorf(haven.EDUPLICATE, "A user with the email %s already exists.", *email)
			}
			if _, err := tx.Exec(`UPDATE users SET email = ?, digest_ha1 = ? WHERE actor_id = ?`, strings.ToLower(*email), []byte{}, id); err != nil {
				return err
			}
			_, err = tx.Exec(`UPDATE actors SET updated_at = ? WHERE id = ?`, now, id)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return u.Get(ctx, id)
}

// SetPassword replaces a live user's password, once the old one is proved,
// and ends every session of theirs but keep (the one asking, if any): a
// password changed because it leaked must shut out whoever holds it.
func (u *Users) SetPassword(ctx context.Context, id int64, old, password, keep string) error {
	user, err := u.Get(ctx, id)
	if err != nil {
		return err
	}
	if _, err := u.Authenticate(ctx, user.Email, old); err != nil {
		return haven.Errorf(haven.EUNAUTHORIZED, "The current password is wrong: nothing was changed.")
	}
	if err := ValidatePassword(password); err != nil {
		return err
	}
	hash := HashPassword(password)
	ha1 := u.Keys.SealMaster(digestHA1(user.Email, password), "digest "+user.Email)
	defer u.changed("basic")
	return u.DB.Write(ctx, func(tx *Tx) error {
		if _, err := tx.Exec(`UPDATE users SET password_hash = ?, digest_ha1 = ? WHERE actor_id = ?`, hash, ha1, id); err != nil {
			return err
		}
		now := ms(tx.Now())
		if _, err := tx.Exec(`UPDATE actors SET updated_at = ? WHERE id = ?`, now, id); err != nil {
			return err
		}
		_, err := tx.Exec(`UPDATE sessions SET revoked_at = ? WHERE actor_id = ? AND revoked_at IS NULL AND id <> ?`, now, id, keep)
		return err
	})
}

// SetAdmin makes a live user a site administrator, or takes that away.
// The last administrator stays one.
func (u *Users) SetAdmin(ctx context.Context, id int64, admin bool) error {
	return u.DB.Write(ctx, func(tx *Tx) error {
		var was bool
		err := tx.QueryRow(`SELECT u.admin FROM users u JOIN actors a ON a.id = u.actor_id WHERE a.id = ? AND a.deleted_at IS NULL`, id).Scan(&was)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound(fmt.Sprintf("User %d", id))
		} else if err != nil {
			return err
		}
		if was && !admin {
			var n int
			if err := tx.QueryRow(`SELECT count(*) FROM users u JOIN actors a ON a.id = u.actor_id WHERE u.admin = 1 AND a.deleted_at IS NULL`).Scan(&n); err != nil {
				return err
			}
			if n <= 1 {
				return haven.Errorf(haven.ECONFLICT, "User %d is the last administrator; make another administrator first.", id)
			}
		}
		_, err = tx.Exec(`UPDATE users SET admin = ? WHERE actor_id = ?`, admin, id)
		return err
	})
}

// changed forgets a cache of this node, and tells the other nodes to.
func (u *Users) changed(name string) {
	switch name {
	case "basic":
		u.basic.clear()
	case "tokens":
		u.tokens.clear()
	}
	u.DB.changed(name)
}

// ActorName returns an actor's display name.
func (u *Users) ActorName(ctx context.Context, id int64) (string, error) {
	var name string
	err := u.DB.read.QueryRowContext(ctx, `SELECT display_name FROM actors WHERE id = ?`, id).Scan(&name)
	return name, err
}
