package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/haven-org/haven"
)

// Projects reads and writes projects.
type Projects struct {
	DB   *DB
	Keys *Keyring

	cache ttlCache[int64, *haven.Project] // Get, for every device request
}

// Lifecycle is what may be set about a project's end and access: nil fields stay as they are.
type Lifecycle struct {
	EndDate       *time.Time
	ClearEndDate  bool
	RetentionDays *int
	MinCellSize   *int // k of the small-cell rule, 3 or more
	// APIAllow and DeviceAllow replace the project's address allowlists.
	APIAllow, DeviceAllow *haven.Allowlist
	// Archived sets the project aside (or back).
	Archived *bool
}

func checkLifecycle(l Lifecycle) error {
	if l.RetentionDays != nil && (*l.RetentionDays < 0 || *l.RetentionDays > 36500) {
		return haven.Errorf(haven.EINVALID, "retentionDays must be a number of days from 0 to 36500.")
	}
	if l.MinCellSize != nil && (*l.MinCellSize < 3 || *l.MinCellSize > 1000) {
		return haven.Errorf(haven.EINVALID, "minCellSize must be from 3 to 1000: smaller counts would let people be singled out.")
	}
	return nil
}

// Create makes a project with its own data key.
func (p *Projects) Create(ctx context.Context, name, description string, life ...Lifecycle) (*haven.Project, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, haven.Errorf(haven.EINVALID, "A project needs a name.")
	}
	var l Lifecycle
	if len(life) > 0 {
		l = life[0]
	}
	if err := checkLifecycle(l); err != nil {
		return nil, err
	}
	var id int64
	err := p.DB.Write(ctx, func(tx *Tx) error {
		var end sql.NullInt64
		if l.EndDate != nil {
			end = sql.NullInt64{Int64: ms(*l.EndDate), Valid: true}
		}
		retention := 0
		if l.RetentionDays != nil {
			retention = *l.RetentionDays
		}
		k := 5
		if l.MinCellSize != nil {
			k = *l.MinCellSize
		}
		var apiAllow, deviceAllow string
		if l.APIAllow != nil {
			apiAllow = l.APIAllow.String()
		}
		if l.DeviceAllow != nil {
			deviceAllow = l.DeviceAllow.String()
		}
		if err := tx.Insert(&id, `INSERT INTO projects (name, description, created_at, updated_at, end_date, retention_days, min_cell_size, api_allow, device_allow)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, name, description, ms(tx.Now()), ms(tx.Now()), end, retention, k, apiAllow, deviceAllow); err != nil {
			return err
		}
		return p.Keys.createProjectKey(tx, id)
	})
	if err != nil {
		return nil, err
	}
	return p.Get(ctx, id)
}

const projectColumns = `p.id, p.name, p.description, p.created_at, p.updated_at, p.end_date, p.retention_days, p.destruction_started_at,
	p.destroyed_at, p.min_cell_size, p.api_allow, p.device_allow, p.archived, h.reason, h.reference, h.placed_by, h.placed_at FROM projects p LEFT JOIN legal_holds h ON h.project_id = p.id AND h.lifted_at IS NULL`

func scanProject(row interface{ Scan(...any) error }) (*haven.Project, error) {
	var pr haven.Project
	var created, updated int64
	var end, started, destroyed, placedBy, placedAt sql.NullInt64
	var reason, reference sql.NullString
	var apiAllow, deviceAllow string
	if err := row.Scan(&pr.ID, &pr.Name, &pr.Description, &created, &updated, &end, &pr.RetentionDays, &started, &destroyed, &pr.MinCellSize,
		&apiAllow, &deviceAllow, &pr.Archived, &reason, &reference, &placedBy, &placedAt); err != nil {
		return nil, err
	}
	var err error
	if pr.APIAllow, err = haven.ParseAllowlist(apiAllow); err != nil {
		return nil, err
	}
	if pr.DeviceAllow, err = haven.ParseAllowlist(deviceAllow); err != nil {
		return nil, err
	}
	pr.CreatedAt, pr.UpdatedAt = fromMS(created), fromMS(updated)
	pr.EndDate, pr.DestructionStartedAt, pr.DestroyedAt = fromNullMS(end), fromNullMS(started), fromNullMS(destroyed)
	if reason.Valid {
		pr.Hold = &haven.LegalHold{Reason: reason.String, Reference: reference.String, PlacedBy: placedBy.Int64, PlacedAt: fromMS(placedAt.Int64)}
	}
	return &pr, nil
}

// Get returns a project by id. The answer is shared: do not change it.
func (p *Projects) Get(ctx context.Context, id int64) (*haven.Project, error) {
	if pr, ok := p.cache.get(id); ok {
		return pr, nil
	}
	gen := p.cache.generation()
	pr, err := scanProject(p.DB.read.QueryRowContext(ctx, `SELECT `+projectColumns+` WHERE p.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("Project %d", id))
	} else if err != nil {
		return nil, err
	}
	p.cache.put(id, pr, gen)
	return pr, nil
}

// write runs fn in a write transaction and forgets cached projects.
func (p *Projects) write(ctx context.Context, fn func(tx *Tx) error) error {
	defer p.DB.changed("projects")
	defer p.cache.clear()
	return p.DB.Write(ctx, fn)
}

// List returns the projects whose ids pass visible (every project when
// visible is nil), by name.
func (p *Projects) List(ctx context.Context, visible func(id int64) bool) ([]*haven.Project, error) {
	rows, err := p.DB.read.QueryContext(ctx, `SELECT `+projectColumns+` ORDER BY p.name, p.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*haven.Project{}
	for rows.Next() {
		pr, err := scanProject(rows)
		if err != nil {
			return nil, err
		}
		if visible == nil || visible(pr.ID) {
			out = append(out, pr)
		}
	}
	return out, rows.Err()
}

// Update changes a project's name, description and lifecycle. A project
// whose destruction has begun can no longer be changed.
func (p *Projects) Update(ctx context.Context, id int64, name, description *string, life ...Lifecycle) (*haven.Project, error) {
	var l Lifecycle
	if len(life) > 0 {
		l = life[0]
	}
	if err := checkLifecycle(l); err != nil {
		return nil, err
	}
	err := p.write(ctx, func(tx *Tx) error {
		var started sql.NullInt64
		if err := tx.QueryRow(`SELECT destruction_started_at FROM projects WHERE id = ?`, id).Scan(&started); errors.Is(err, sql.ErrNoRows) {
			return notFound(fmt.Sprintf("Project %d", id))
		} else if err != nil {
			return err
		}
		if started.Valid {
			return haven.Errorf(haven.ECONFLICT, "Project %d is being destroyed or was destroyed; it cannot be changed.", id)
		}
		if name != nil {
			if strings.TrimSpace(*name) == "" {
				return haven.Errorf(haven.EINVALID, "A project needs a name.")
			}
			if _, err := tx.Exec(`UPDATE projects SET name = ?, updated_at = ? WHERE id = ?`, strings.TrimSpace(*name), ms(tx.Now()), id); err != nil {
				return err
			}
		}
		if description != nil {
			if _, err := tx.Exec(`UPDATE projects SET description = ?, updated_at = ? WHERE id = ?`, *description, ms(tx.Now()), id); err != nil {
				return err
			}
		}
		if l.EndDate != nil || l.ClearEndDate {
			var end sql.NullInt64
			if l.EndDate != nil {
				end = sql.NullInt64{Int64: ms(*l.EndDate), Valid: true}
			}
			if _, err := tx.Exec(`UPDATE projects SET end_date = ?, updated_at = ? WHERE id = ?`, end, ms(tx.Now()), id); err != nil {
				return err
			}
		}
		if l.MinCellSize != nil {
			if _, err := tx.Exec(`UPDATE projects SET min_cell_size = ?, updated_at = ? WHERE id = ?`, *l.MinCellSize, ms(tx.Now()), id); err != nil {
				return err
			}
		}
		for _, a := range []struct {
			col  string
			list *haven.Allowlist
		}{{"api_allow", l.APIAllow}, {"device_allow", l.DeviceAllow}} {
			if a.list == nil {
				continue
			}
			if _, err := tx.Exec(`UPDATE projects SET `+a.col+` = ?, updated_at = ? WHERE id = ?`, a.list.String(), ms(tx.Now()), id); err != nil {
				return err
			}
		}
		if l.RetentionDays != nil {
			if _, err := tx.Exec(`UPDATE projects SET retention_days = ?, updated_at = ? WHERE id = ?`, *l.RetentionDays, ms(tx.Now()), id); err != nil {
				return err
			}
		}
		if l.Archived != nil {
			if _, err := tx.Exec(`UPDATE projects SET archived = ?, updated_at = ? WHERE id = ?`, *l.Archived, ms(tx.Now()), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p.Get(ctx, id)
}

// PlaceHold places a legal hold on a project: its destruction waits until
// the hold is lifted.
func (p *Projects) PlaceHold(ctx context.Context, id int64, reason, reference string, by int64) (*haven.Project, error) {
	reason, reference = strings.TrimSpace(reason), strings.TrimSpace(reference)
	if reason == "" || reference == "" {
		return nil, haven.Errorf(haven.EINVALID, "A legal hold needs a reason and a reference (the case, request or order it answers).")
	}
	err := p.write(ctx, func(tx *Tx) error {
		var started, destroyed sql.NullInt64
		if err := tx.QueryRow(`SELECT destruction_started_at, destroyed_at FROM projects WHERE id = ?`, id).Scan(&started, &destroyed); errors.Is(err, sql.ErrNoRows) {
			return notFound(fmt.Sprintf("Project %d", id))
		} else if err != nil {
			return err
		}
		if started.Valid {
			return haven.Errorf(haven.ECONFLICT, "Project %d's data is being or has been destroyed; a hold can no longer keep it.", id)
		}
		var n int
		tx.QueryRow(`SELECT count(*) FROM legal_holds WHERE project_id = ? AND lifted_at IS NULL`, id).Scan(&n)
		if n > 0 {
			return haven.Errorf(haven.ECONFLICT, "Project %d is already on legal hold. Lift that hold first to place another.", id)
		}
		_, err := tx.Exec(`INSERT INTO legal_holds (project_id, reason, reference, placed_by, placed_at) VALUES (?, ?, ?, ?, ?)`,
			id, reason, reference, by, ms(tx.Now()))
		return err
	})
	if err != nil {
		return nil, err
	}
	return p.Get(ctx, id)
}

// LiftHold lifts a project's standing legal hold.
func (p *Projects) LiftHold(ctx context.Context, id int64, by int64) (*haven.Project, error) {
	err := p.write(ctx, func(tx *Tx) error {
		res, err := tx.Exec(`UPDATE legal_holds SET lifted_by = ?, lifted_at = ? WHERE project_id = ? AND lifted_at IS NULL`, by, ms(tx.Now()), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return haven.Errorf(haven.ENOTFOUND, "Project %d has no legal hold to lift.", id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p.Get(ctx, id)
}
