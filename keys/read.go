package keys

import (
	"context"

	"github.com/spkgate/spkgate/keystore"
)

// Get returns one key. With a non-empty accountID only that account's key
// is found; another account's or an unknown id is keystore.ErrNotFound.
// Revoked keys are returned too (RevokedAt says so).
func (m *Manager) Get(ctx context.Context, accountID, keyID string) (keystore.Key, error) {
	return m.Store.GetKey(ctx, accountID, keyID)
}

// Plan returns the plan recorded for the account, or keystore.ErrNotFound
// if none was.
func (m *Manager) Plan(ctx context.Context, accountID string) (string, error) {
	return m.Store.GetPlan(ctx, accountID)
}
