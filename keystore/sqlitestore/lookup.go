package sqlitestore

import (
	"context"
	"fmt"
	"strings"

	"github.com/spkgate/spkgate/keystore"
)

// lookupSQL is the gateway's cold path: one probe of the unique key_hash
// index (TestLookupUsesTheIndex).
const lookupSQL = `SELECT ` + credentialColumns + `
	FROM api_keys k LEFT JOIN accounts a ON a.id = k.account_id
	WHERE k.key_hash = ?`

// LookupKey finds a key by hash, with its account's plan, in one indexed
// query: the fields keystore.Credential names. Revoked and expired keys
// are returned too.
func (s *Store) LookupKey(ctx context.Context, h keystore.Hash) (keystore.Credential, error) {
	const op = "lookup key"
	if err := s.closedErr(op); err != nil {
		return keystore.Credential{}, err
	}
	c, err := scanCredential(s.lookup.QueryRowContext(ctx, h[:]))
	if err != nil {
		return keystore.Credential{}, s.errorf(op, err)
	}
	return c, nil
}

// LookupKeys finds many keys by hash in one query: one probe of the
// key_hash index per hash.
func (s *Store) LookupKeys(ctx context.Context, hashes []keystore.Hash) (map[keystore.Hash]keystore.Credential, error) {
	const op = "lookup keys"
	if len(hashes) > keystore.MaxLookupBatch {
		return nil, invalid(op, fmt.Sprintf("%d hashes, at most %d", len(hashes), keystore.MaxLookupBatch))
	}
	if err := s.closedErr(op); err != nil {
		return nil, err
	}
	found := make(map[keystore.Hash]keystore.Credential, len(hashes))
	if len(hashes) == 0 {
		return found, nil
	}
	args := make([]any, len(hashes))
	for i := range hashes {
		args[i] = hashes[i][:]
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+credentialColumns+`, k.key_hash
		FROM api_keys k LEFT JOIN accounts a ON a.id = k.account_id
		WHERE k.key_hash IN (?`+strings.Repeat(", ?", len(hashes)-1)+`)`, args...)
	if err != nil {
		return nil, s.errorf(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		var hb []byte
		c, err := scanCredential(rows, &hb)
		if err != nil {
			return nil, s.errorf(op, err)
		}
		h, err := toHash(hb)
		if err != nil {
			return nil, s.errorf(op, err)
		}
		found[h] = c
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf(op, err)
	}
	return found, nil
}
