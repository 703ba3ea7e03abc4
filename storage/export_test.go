package storage

import "context"

// DestroyOneBatch runs the first steps of a destruction only, as a crash
// after its first transaction would leave it.
func (s *Store) DestroyOneBatch(ctx context.Context, projectID int64) (int, error) {
	if err := s.Projects.write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`UPDATE projects SET destruction_started_at = ? WHERE id = ?`, ms(tx.Now()), projectID)
		return err
	}); err != nil {
		return 0, err
	}
	return s.destroySubmissions(ctx, projectID)
}

// XMLAAD is the place a submission version's XML is sealed to.
func XMLAAD(formID int64, instanceID string) string { return xmlAAD(formID, instanceID) }
