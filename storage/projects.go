package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/haven-org/haven"
)

// Projects reads and writes projects.
type Projects struct {
	DB   *DB
	Keys *Keyring
}

// Create makes a project with its own data key.
func (p *Projects) Create(ctx context.Context, name, description string) (*haven.Project, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, haven.Errorf(haven.EINVALID, "A project needs a name.")
	}
	var project *haven.Project
	err := p.DB.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec(`INSERT INTO projects (name, description, created_at, updated_at) VALUES (?, ?, ?, ?)`,
			name, description, ms(tx.Now()), ms(tx.Now()))
		if err != nil {
			return err
		}
		id, _ := res.LastInsertId()
		if err := p.Keys.createProjectKey(tx, id); err != nil {
			return err
		}
		project = &haven.Project{ID: id, Name: name, Description: description, CreatedAt: tx.Now(), UpdatedAt: tx.Now()}
		return nil
	})
	return project, err
}

func scanProject(row interface{ Scan(...any) error }) (*haven.Project, error) {
	var pr haven.Project
	var created, updated int64
	if err := row.Scan(&pr.ID, &pr.Name, &pr.Description, &created, &updated); err != nil {
		return nil, err
	}
	pr.CreatedAt, pr.UpdatedAt = fromMS(created), fromMS(updated)
	return &pr, nil
}

// Get returns a project by id.
func (p *Projects) Get(ctx context.Context, id int64) (*haven.Project, error) {
	pr, err := scanProject(p.DB.read.QueryRowContext(ctx, `SELECT id, name, description, created_at, updated_at FROM projects WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("Project %d", id))
	}
	return pr, err
}

// List returns the projects whose ids pass visible, by name.
func (p *Projects) List(ctx context.Context, visible func(id int64) bool) ([]*haven.Project, error) {
	rows, err := p.DB.read.QueryContext(ctx, `SELECT id, name, description, created_at, updated_at FROM projects ORDER BY name, id`)
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
		if visible(pr.ID) {
			out = append(out, pr)
		}
	}
	return out, rows.Err()
}

// Update changes a project's name and description.
func (p *Projects) Update(ctx context.Context, id int64, name, description *string) (*haven.Project, error) {
	err := p.DB.Write(ctx, func(tx *Tx) error {
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
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p.Get(ctx, id)
}
