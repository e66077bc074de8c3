package caddymodule

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/spkgate/spkgate/keystore"
)

// Bounds of the spk app's event_retention.
const (
	// MinEventRetention is the shortest audit retention: a day.
	MinEventRetention = 24 * time.Hour
	// MaxEventRetention is the longest: ten years.
	MaxEventRetention = 10 * 365 * 24 * time.Hour
	// eventPruneInterval is how often old audit events are deleted.
	eventPruneInterval = 6 * time.Hour
)

// validateRetention checks event_retention: 0 (the default, 400 days) or
// from a day to ten years.
func (a *App) validateRetention() error {
	r := time.Duration(a.EventRetention)
	if r != 0 && (r < MinEventRetention || r > MaxEventRetention) {
		return fmt.Errorf("event_retention %s out of range: it must be from %s to %s (0 or absent: 400 days)", r, MinEventRetention, MaxEventRetention)
	}
	return nil
}

// eventRetention is the configured retention, or the default.
func (a *App) eventRetention() time.Duration {
	if a.EventRetention == 0 {
		return keystore.DefaultEventRetention
	}
	return time.Duration(a.EventRetention)
}

// startPruning starts pruneEvents; s.stopPruning ends it and waits.
func (s *shared) startPruning() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.pruneEvents(ctx) }()
	s.stopPruning = func() { cancel(); <-done }
}

// pruneEvents deletes the audit events older than the shared store's
// current retention, a minute after start-up and then every
// eventPruneInterval, until ctx ends. Every instance on a database
// prunes: the deletes are idempotent.
func (s *shared) pruneEvents(ctx context.Context) {
	t := time.NewTimer(time.Minute) // after start-up, not during it
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		retention := time.Duration(s.retention.Load())
		pctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		n, err := s.store.PruneEvents(pctx, time.Now().Add(-retention))
		cancel()
		logger := s.logger.Load()
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Warn("pruning audit events failed", zap.Error(err))
		case n > 0:
			logger.Info("pruned audit events", zap.Int64("deleted", n), zap.Duration("retention", retention))
		}
		t.Reset(eventPruneInterval)
	}
}
