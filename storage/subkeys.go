package storage

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/haven-org/haven"
)

// A key per submission. Each submission (every version's XML, its instance
// name, device ids, edit reasons, consent record, comments, and the keys of
// its files) is sealed under its own data key. That key is kept in a slot
// of its project's slot file in the key store, beside the project's key
// and, like it, never in the database nor in a backup: masked under the
// project key, so destroying the project's key still destroys all of them.
// Erasing one submission zeroes its slot on disk once the rows are gone.
// Whatever copy of its ciphertext survives (old WAL frames, free pages,
// objects a store kept, a backup taken before) then opens with nothing:
// not with the live project key, not with the live key store.
//
// Slots are numbered upward and never reused while Haven runs (nextSlot),
// so zeroing a slot after the erasing transaction commits can never touch
// a newer submission's key. The erasing transaction lists the
// slot; a crash before it is zeroed is finished when the store next opens
// (ReconcileSlots).

// slotSize is a slot: a 16-byte nonce and the 32-byte key masked by an
// HMAC of the nonce under the project key.
const slotSize = 16 + KeySize

// SubmissionKey seals the data of one submission.
type SubmissionKey struct {
	Slot int64
	aead cipher.AEAD
}

// Seal encrypts a value of the submission, bound to its place by aad.
func (sk *SubmissionKey) Seal(plaintext []byte, aad string) []byte {
	return seal(sk.aead, plaintext, []byte(aad))
}

// Open decrypts what Seal sealed with the same aad.
func (sk *SubmissionKey) Open(sealed []byte, aad string) ([]byte, error) {
	b, err := open(sk.aead, sealed, []byte(aad))
	if err != nil {
		return nil, fmt.Errorf("decrypting %s: %w", aad, err)
	}
	return b, nil
}

// sealer is what seals a submission's values: its own key, or its
// project's for a submission stored before submissions had keys.
type sealer interface {
	Seal(plaintext []byte, aad string) []byte
	Open(sealed []byte, aad string) ([]byte, error)
}

// slotFile is a project key's file of submission key slots.
type slotFile struct {
	mu    sync.Mutex
	f     *os.File
	size  int64 // how far the file's zeros and slots reach
	dirty bool
}

// nextSlot numbers a new slot. Numbers only grow while Haven runs, so an
// erasure zeroing its slot after its commit never meets a newer key there;
// at start they continue past every slot the database names (erasures
// pending from before are finished first, by ReconcileSlots).
func (k *Keyring) nextSlot(tx *Tx, pk *ProjectKey) (int64, error) {
	if tx.db.pg {
		return k.nextSlotShared(tx, pk)
	}
	k.slotMu.Lock()
	defer k.slotMu.Unlock()
	n, ok := k.slotNext[pk.ID]
	if !ok {
		if err := tx.QueryRow(usedSlots, pk.ProjectID, pk.ID).Scan(&n); err != nil {
			return 0, err
		}
	}
	n++
	k.slotNext[pk.ID] = n
	return n, nil
}

// usedSlots is the highest slot the database names for a project key.
const usedSlots = `SELECT coalesce(max(slot), 0) FROM (
	SELECT max(s.key_slot) AS slot FROM submissions s JOIN forms f ON f.id = s.form_id WHERE f.project_id = ?1
	UNION ALL SELECT max(key_slot) FROM blobs WHERE project_id = ?1
	UNION ALL SELECT max(e.key_slot) FROM entities e JOIN entity_lists l ON l.id = e.list_id WHERE l.project_id = ?1
	UNION ALL SELECT max(slot) FROM key_slot_erasures WHERE project_key_id = ?2) AS used`

// nextSlotShared numbers a slot on PostgreSQL, where several nodes number
// at once: each node takes a block of slotBlock numbers from a counter row
// per project key (started past every slot the database names) in a
// statement of its own, outside the writing transaction, and hands them
// out from memory. Holding the row for the whole batch transaction, as
// the first version did, made every node's batches wait for each other.
// Numbers only grow; a block a node never finishes (it stopped), and a
// number whose transaction rolled back, are skipped and never used: a
// rolled-back number was never committed, so no erasure can name it.
func (k *Keyring) nextSlotShared(tx *Tx, pk *ProjectKey) (int64, error) {
	k.slotMu.Lock()
	defer k.slotMu.Unlock()
	if b := k.slotBlocks[pk.ID]; b != nil && b.next <= b.last {
		n := b.next
		b.next++
		return n, nil
	}
	first, err := k.takeBlock(tx.db, pk)
	if err != nil {
		return 0, err
	}
	k.slotBlocks[pk.ID] = &slotRange{next: first + 1, last: first + slotBlock - 1}
	return first, nil
}

// takeBlock takes the next slotBlock slot numbers of a project key from
// its counter row, in a statement of its own, and returns the first.
func (k *Keyring) takeBlock(db *DB, pk *ProjectKey) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last int64
	take := func() error {
		return db.read.QueryRowContext(ctx, `UPDATE key_slot_counters SET last = last + ? WHERE project_key_id = ? RETURNING last`, slotBlock, pk.ID).Scan(&last)
	}
	err := take()
	if errors.Is(err, sql.ErrNoRows) {
		var used int64
		if err := db.read.QueryRowContext(ctx, usedSlots, pk.ProjectID, pk.ID).Scan(&used); err != nil {
			return 0, err
		}
		if _, err := db.read.db.ExecContext(ctx, db.dialect(`INSERT INTO key_slot_counters (project_key_id, last) VALUES (?, ?) ON CONFLICT (project_key_id) DO NOTHING`), pk.ID, used); err != nil {
			return 0, err
		}
		err = take()
	}
	if err != nil {
		return 0, err
	}
	return last - slotBlock + 1, nil
}

// makeKey makes a submission key for a new submission. On a shared key
// store (a bucket) the key is already in its slot: each node takes a block
// of slot numbers, makes a key for every slot and writes them as one
// object, then hands them out, so that commits wait for no write to the
// bucket (one write per 64 submissions instead of one per batch, measured
// in BENCHMARKS.md). A key handed out and never used (a resend, a write
// that failed) is a key for nothing, destroyed with its project's. In a
// folder, the key gets its slot when store writes it, in the transaction.
func (k *Keyring) makeKey(pk *ProjectKey) (*freshKey, error) {
	o, shared := k.ks.(*objectKeys)
	if !shared {
		return newKey(pk)
	}
	k.slotMu.Lock()
	defer k.slotMu.Unlock()
	b := k.written[pk.ID]
	if b == nil || b.next == len(b.keys) {
		first, err := k.takeBlock(k.db, pk)
		if err != nil {
			return nil, err
		}
		keys := make([]*freshKey, slotBlock)
		run := make([]byte, 0, slotBlock*slotSize)
		for i := range keys {
			if keys[i], err = newKey(pk); err != nil {
				return nil, err
			}
			keys[i].Slot, keys[i].written = first+int64(i), true
			run = append(run, keys[i].slotBytes...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := o.putRun(ctx, runID{pk.ID, first}, run); err != nil {
			return nil, err
		}
		b = &keyBlock{keys: keys}
		k.written[pk.ID] = b
	}
	key := b.keys[b.next]
	b.keys[b.next] = nil
	b.next++
	return key, nil
}

// keyBlock is a block of keys written ahead to the shared key store.
type keyBlock struct {
	keys []*freshKey
	next int
}

// slotBlock is how many slot numbers a node takes at a time on PostgreSQL.
const slotBlock = 64

// slotRange is the rest of a node's block of slot numbers.
type slotRange struct{ next, last int64 }

// slotChunk is how far a slot file grows at a time: written with zeros
// and flushed whole, so that writing a slot later overwrites data in place
// and flushing it needs no journal commit (fdatasync). One fsync per
// 21,845 submissions instead of one per commit cut what submission keys cost
// the commit path by two thirds (see BENCHMARKS.md).
const slotChunk = 1 << 20

// reserve makes sure the file's zeros reach past slot.
func (sf *slotFile) reserve(slot int64) error {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	end := (slot + 1) * slotSize
	if end <= sf.size {
		return nil
	}
	// Another process (a node sharing the key store) may grow the file
	// too: the lock keeps its zeros from landing on a key written here
	// after this one grew it.
	unlock, err := lockFile(sf.f)
	if err != nil {
		return err
	}
	defer unlock()
	fi, err := sf.f.Stat()
	if err != nil {
		return err
	}
	sf.size = fi.Size()
	if end <= sf.size {
		return nil
	}
	grown := (end/slotChunk + 1) * slotChunk
	zero := make([]byte, grown-sf.size)
	if _, err := sf.f.WriteAt(zero, sf.size); err != nil {
		return fmt.Errorf("growing the submission keys: %w", err)
	}
	if err := sf.f.Sync(); err != nil {
		return err
	}
	sf.size = grown
	return nil
}

// slotMask masks a key in its slot: an HMAC of the slot's random nonce
// under the project key. (A key copied to another slot opens nothing else:
// what it sealed is bound to its submission's place.)
func slotMask(pk *ProjectKey, nonce []byte) []byte {
	return pk.MAC(append([]byte("submission key "), nonce...))
}

// freshKey is a new submission key, made outside the write transaction
// (randomness and the slot's bytes cost the one writer nothing): the
// transaction only numbers its slot and writes it.
type freshKey struct {
	*SubmissionKey
	slotBytes []byte
	written   bool // already in its slot (makeKey, on a shared key store)
}

// newKey makes a submission key and its slot's bytes, masked under the
// project key with a random nonce.
func newKey(pk *ProjectKey) (*freshKey, error) {
	buf := make([]byte, 16+2*KeySize)
	rand.Read(buf)
	nonce, raw := buf[:16], buf[16+KeySize:]
	subtle.XORBytes(buf[16:16+KeySize], raw, slotMask(pk, nonce))
	aead, err := newAEAD(raw)
	if err != nil {
		return nil, err
	}
	return &freshKey{SubmissionKey: &SubmissionKey{aead: aead}, slotBytes: buf[:slotSize]}, nil
}

// store gives a fresh key a new slot of its project, inside tx: written
// now, made durable before tx commits.
func (k *Keyring) store(tx *Tx, pk *ProjectKey, key *freshKey) error {
	if key.written {
		return nil
	}
	slot, err := k.nextSlot(tx, pk)
	if err != nil {
		return err
	}
	if err := k.ks.putSlot(pk.ID, slot, key.slotBytes); err != nil {
		return err
	}
	tx.batch.needSync = true // the slot is flushed before the commit that names it
	key.Slot = slot
	return nil
}

// newSubmissionKey makes a submission key in a new slot, inside tx.
func (k *Keyring) newSubmissionKey(tx *Tx, pk *ProjectKey) (*SubmissionKey, error) {
	key, err := k.makeKey(pk)
	if err != nil {
		return nil, err
	}
	if err := k.store(tx, pk, key); err != nil {
		return nil, err
	}
	return key.SubmissionKey, nil
}

// errKeyDestroyed is the answer for a submission whose key is gone.
var errKeyDestroyed = haven.Errorf(haven.ENOTFOUND, "This submission's key was destroyed: it was erased.")

// SubmissionKey returns the key in a slot of a project.
func (k *Keyring) SubmissionKey(pk *ProjectKey, slot int64) (*SubmissionKey, error) {
	buf, err := k.ks.getSlot(context.Background(), pk.ID, slot)
	if err != nil {
		return nil, err
	}
	if len(buf) != slotSize || allZero(buf) {
		return nil, errKeyDestroyed
	}
	raw := make([]byte, KeySize)
	subtle.XORBytes(raw, buf[16:], slotMask(pk, buf[:16]))
	aead, err := newAEAD(raw)
	if err != nil {
		return nil, err
	}
	return &SubmissionKey{Slot: slot, aead: aead}, nil
}

// sealerFor returns what seals a submission's values: the key in its slot,
// or the project key for a submission stored before it had one (slot 0).
func (k *Keyring) sealerFor(pk *ProjectKey, slot int64) (sealer, error) {
	if slot == 0 {
		return pk, nil
	}
	return k.SubmissionKey(pk, slot)
}

// DestroySubmissionKeys zeroes slots durably: the submissions they served
// were erased by a transaction that committed.
func (k *Keyring) DestroySubmissionKeys(pk *ProjectKey, slots ...int64) error {
	var live []int64
	for _, s := range slots {
		if s != 0 {
			live = append(live, s)
		}
	}
	if len(live) == 0 {
		return nil
	}
	return k.ks.zeroSlots(context.Background(), pk.ID, live)
}

// SyncSlots makes the slots written since the last call durable: run
// before a commit that names new slots.
func (k *Keyring) SyncSlots(ctx context.Context) error { return k.ks.syncSlots(ctx) }

// ReconcileSlots zeroes the slots of erasures that stopped between their
// commit and the zeroing (the erasing transaction lists them), then
// forgets the list. It runs when the store opens, before any write. (It
// never zeroes a slot merely because this database does not name it: an
// older backup opened beside the live key store must not destroy the keys
// of what arrived after it.)
func (k *Keyring) ReconcileSlots(ctx context.Context) (int, error) {
	if !k.db.pg { // PostgreSQL's schema has the table from its first migration
		var tables int
		if err := k.db.read.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE name = 'key_slot_erasures'`).Scan(&tables); err != nil || tables == 0 {
			return 0, err // a database older than submission keys (tests open those)
		}
	}
	rows, err := k.db.read.QueryContext(ctx, `SELECT e.slot, pk.id, pk.project_id FROM key_slot_erasures e
		JOIN project_keys pk ON pk.id = e.project_key_id WHERE pk.destroyed_at IS NULL ORDER BY pk.id, e.slot`)
	if err != nil {
		return 0, err
	}
	type pending struct{ slot, key, project int64 }
	var all []pending
	for rows.Next() {
		var p pending
		rows.Scan(&p.slot, &p.key, &p.project)
		all = append(all, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	var done []pending
	for _, p := range all {
		pk, err := k.ProjectKey(ctx, p.project)
		if haven.ErrorCode(err) == haven.EUNAVAILABLE || haven.ErrorCode(err) == haven.ENOTFOUND {
			continue // the project's key is gone (a backup of a project since destroyed): its slots went with it
		} else if err != nil {
			return 0, err
		}
		if err := k.DestroySubmissionKeys(pk, p.slot); err != nil {
			return 0, err
		}
		done = append(done, p)
	}
	return len(done), k.db.Write(ctx, func(tx *Tx) error {
		for _, p := range done {
			if _, err := tx.Exec(`DELETE FROM key_slot_erasures WHERE project_key_id = ? AND slot = ?`, p.key, p.slot); err != nil {
				return err
			}
		}
		return nil
	})
}

// closeSlots closes the key store.
func (k *Keyring) closeSlots() { k.ks.close() }

// rewrap moves a file's key from its project's key to its submission's,
// before the file is recorded: the key wrapped by the project key is never
// written to the database. A submission sealed under its project's key
// (stored before submissions had keys) leaves it as it is.
func rewrap(pk *ProjectKey, sk sealer, b *Blob) error {
	key, ok := sk.(*SubmissionKey)
	if !ok || b.KeySlot != 0 {
		return nil
	}
	raw, err := pk.Open(b.WrappedKey, "blob "+b.Object)
	if err != nil {
		return err
	}
	b.WrappedKey, b.KeySlot = key.Seal(raw, "blob "+b.Object), key.Slot
	return nil
}

// SealLegacy gives each submission stored before submissions had keys one
// of its own, and reseals everything of it under that key (versions,
// instance names, device ids, edit reasons, consent record, comments, the
// keys of its files), a batch of submissions per transaction: interrupted,
// it resumes where it stopped. progress, when set, hears the count so far
// and how many remain. It returns how many it resealed.
func (s *Submissions) SealLegacy(ctx context.Context, progress func(done, left int)) (int, error) {
	done := 0
	for {
		var left int
		if err := s.DB.read.QueryRowContext(ctx, `SELECT count(*) FROM submissions WHERE key_slot IS NULL`).Scan(&left); err != nil {
			return done, err
		}
		if left == 0 {
			return done, nil
		}
		if progress != nil {
			progress(done, left)
		}
		n := 0
		err := s.DB.Write(ctx, func(tx *Tx) error {
			n = 0
			rows, err := tx.Query(`SELECT s.id, s.form_id, s.instance_id, f.project_id FROM submissions s JOIN forms f ON f.id = s.form_id
				WHERE s.key_slot IS NULL ORDER BY s.id LIMIT 50`)
			if err != nil {
				return err
			}
			type legacy struct {
				id, form, project int64
				instance          string
			}
			var batch []legacy
			for rows.Next() {
				var l legacy
				if err := rows.Scan(&l.id, &l.form, &l.instance, &l.project); err != nil {
					rows.Close()
					return err
				}
				batch = append(batch, l)
			}
			rows.Close()
			for _, l := range batch {
				pk, err := s.Keys.ProjectKey(ctx, l.project)
				if err != nil {
					return err
				}
				if err := s.reseal(tx, pk, l.id, l.form, l.instance); err != nil {
					return fmt.Errorf("resealing submission %s: %w", l.instance, err)
				}
				n++
			}
			return nil
		})
		if err != nil {
			return done, err
		}
		done += n
	}
}

// reseal moves one submission from its project's key to a key of its own.
func (s *Submissions) reseal(tx *Tx, pk *ProjectKey, id, formID int64, instanceID string) error {
	sk, err := s.Keys.newSubmissionKey(tx, pk)
	if err != nil {
		return err
	}
	move := func(sealed []byte, aad string) ([]byte, error) {
		if sealed == nil {
			return nil, nil
		}
		plain, err := pk.Open(sealed, aad)
		if err != nil {
			return nil, err
		}
		return sk.Seal(plain, aad), nil
	}
	var device []byte
	if err := tx.QueryRow(`SELECT device_id FROM submissions WHERE id = ?`, id).Scan(&device); err != nil {
		return err
	}
	if device, err = moveString(move, device, deviceAAD(formID, instanceID)); err != nil {
		return err
	}
	if _, err := tx.Exec(`UPDATE submissions SET device_id = ?, key_slot = ? WHERE id = ?`, device, sk.Slot, id); err != nil {
		return err
	}
	type version struct {
		id                     int64
		instance               string
		xml, name, dev, reason []byte
	}
	rows, err := tx.Query(`SELECT id, instance_id, xml, instance_name, device_id, edit_reason FROM submission_versions WHERE submission_id = ?`, id)
	if err != nil {
		return err
	}
	var versions []version
	for rows.Next() {
		var v version
		if err := rows.Scan(&v.id, &v.instance, &v.xml, &v.name, &v.dev, &v.reason); err != nil {
			rows.Close()
			return err
		}
		versions = append(versions, v)
	}
	rows.Close()
	for _, v := range versions {
		var err error
		if v.xml, err = move(v.xml, xmlAAD(formID, v.instance)); err != nil {
			return err
		}
		if v.name, err = move(v.name, nameAAD(formID, v.instance)); err != nil {
			return err
		}
		if v.dev, err = moveString(move, v.dev, deviceAAD(formID, v.instance)); err != nil {
			return err
		}
		if v.reason, err = moveString(move, v.reason, reasonAAD(formID, v.instance)); err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE submission_versions SET xml = ?, instance_name = ?, device_id = ?, edit_reason = ? WHERE id = ?`,
			v.xml, v.name, v.dev, v.reason, v.id); err != nil {
			return err
		}
	}
	var consent []byte
	err = tx.QueryRow(`SELECT device_id FROM consent_records WHERE submission_id = ?`, id).Scan(&consent)
	if err == nil {
		if consent, err = moveString(move, consent, deviceAAD(formID, instanceID)); err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE consent_records SET device_id = ? WHERE submission_id = ?`, consent, id); err != nil {
			return err
		}
	} else if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	type sealedRow struct {
		id    int64
		value []byte
		name  string
	}
	var comments, blobs []sealedRow
	crows, err := tx.Query(`SELECT id, body FROM submission_comments WHERE submission_id = ?`, id)
	if err != nil {
		return err
	}
	for crows.Next() {
		var c sealedRow
		crows.Scan(&c.id, &c.value)
		comments = append(comments, c)
	}
	crows.Close()
	for _, c := range comments {
		body, err := move(c.value, commentAAD(formID, instanceID))
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE submission_comments SET body = ? WHERE id = ?`, body, c.id); err != nil {
			return err
		}
	}
	brows, err := tx.Query(`SELECT DISTINCT b.id, b.wrapped_key, b.object FROM blobs b JOIN submission_attachments a ON a.blob_id = b.id
		JOIN submission_versions v ON v.id = a.version_id WHERE v.submission_id = ? AND b.key_slot IS NULL`, id)
	if err != nil {
		return err
	}
	for brows.Next() {
		var b sealedRow
		brows.Scan(&b.id, &b.value, &b.name)
		blobs = append(blobs, b)
	}
	brows.Close()
	for _, b := range blobs {
		wrapped, err := move(b.value, "blob "+b.name)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE blobs SET wrapped_key = ?, key_slot = ? WHERE id = ?`, wrapped, sk.Slot, b.id); err != nil {
			return err
		}
	}
	return nil
}

// moveString reseals a value that may be stored empty (an empty device id
// or reason is kept as it is, as openString reads it).
func moveString(move func([]byte, string) ([]byte, error), sealed []byte, aad string) ([]byte, error) {
	if len(sealed) == 0 {
		return sealed, nil
	}
	return move(sealed, aad)
}
