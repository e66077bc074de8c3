// Package caddymodule holds spkgate's Caddy modules: the spk app (store and
// cache), the spk_auth and spk_console HTTP handlers, the spk.storage.*
// store modules, the admin API routes and the "caddy spk" command.
package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/spkgate/spkgate/keycache"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
)

func init() {
	caddy.RegisterModule(App{})
}

// DefaultAPIPlans are the plans with API access unless api_plans says otherwise.
var DefaultAPIPlans = []string{"pro", "business", "enterprise"}

// App is the spk app: it owns the key store and the cache of verified keys
// that the spk_auth and spk_console handlers and the admin API use. Store and
// cache are shared by every configuration that names the same database, so
// they survive config reloads without dropping a request.
type App struct {
	// StorageRaw selects the key store: a module of the spk.storage
	// namespace ("sqlite" or "postgres"). Default: SQLite in spk/spk.db
	// under Caddy's data directory.
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=spk.storage inline_key=driver"`

	// CacheTTL is how long a verified key stays cached at most: a safety
	// net. Revocations, edits, plan changes and new keys on any instance
	// reach the cache as they happen (PostgreSQL: at once, through
	// LISTEN/NOTIFY; otherwise at the next read of the change log), so
	// while the cache can prove it is current its entries are not reloaded
	// on a timer. While it cannot, no entry is trusted for more than 5s
	// (keys in use are reloaded in the background to stay usable). At most
	// 1h. Default: 10m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	// NegativeCacheTTL is how long an unknown, revoked or expired key is
	// remembered as such. At most 10s. Default: 5s.
	NegativeCacheTTL caddy.Duration `json:"negative_cache_ttl,omitempty"`

	// APIPlans lists the account plans that have API access; a key whose
	// account is on another plan gets 403 plan_upgrade_required.
	// Default: ["pro", "business", "enterprise"].
	APIPlans []string `json:"api_plans,omitempty"`

	// UpgradeURL is where a plan_upgrade_required answer, and the console's
	// upgrade prompt unless it names its own, send the user.
	// Default: /billing/upgrade.
	UpgradeURL string `json:"upgrade_url,omitempty"`

	// ChangePollInterval is how often the store's change log is read to
	// learn of revocations, plan changes and new keys made elsewhere. On
	// PostgreSQL, changes arrive at once through LISTEN/NOTIFY and this
	// read is the backstop. At most 1m. Default: 1s.
	ChangePollInterval caddy.Duration `json:"change_poll_interval,omitempty"`

	// Limits gives plans a rate and a quota per account, by plan name (in
	// any letter case); a plan without an entry is unlimited. Default: none.
	Limits map[string]*PlanLimits `json:"limits,omitempty"`

	// LimitSyncInterval is how often instances sharing a store exchange
	// what they admitted, and quota counts are written. Default: 1s.
	LimitSyncInterval caddy.Duration `json:"limit_sync_interval,omitempty"`

	// UsageFlushInterval is how often the usage counts per key and hour
	// are written to the store. At most 10s. Default: 10s.
	UsageFlushInterval caddy.Duration `json:"usage_flush_interval,omitempty"`

	// EventRetention is how long audit events (key created, edited,
	// rolled, revoked, plan changed) are kept; older ones are deleted
	// every few hours. From 1d to 10 years. Default: 400d.
	EventRetention caddy.Duration `json:"event_retention,omitempty"`

	limits  *limiterRun
	ctx     caddy.Context
	storage StoreOpener
	poolKey string
	shared  *shared
	manager *keys.Manager
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "spk",
		New: func() caddy.Module { return new(App) },
	}
}

// stores holds the store and cache of each database across config reloads.
var stores = caddy.NewUsagePool()

// shared is what configurations naming the same database share: the store,
// the cache and the goroutine that keeps the cache in step with the
// store's change log. The running configuration's change_poll_interval and
// logger apply to it (see reconfigure).
type shared struct {
	store  keystore.Store
	cache  *keycache.Cache
	logger atomic.Pointer[zap.Logger]

	// retention is the audit events' retention (a time.Duration), as the
	// latest configuration set it; stopPruning ends their pruning.
	retention   atomic.Int64
	stopPruning func()

	mu       sync.Mutex // guards the follower below
	interval time.Duration
	cancel   context.CancelFunc
	done     chan struct{}
}

// follow starts the cache's background work (keycache.Cache.Follow) with
// the given change-log poll interval and returns once it has read where
// the change log stands (one query, bounded by the cache's query
// timeout): nothing is served before. s.mu must be held.
func (s *shared) follow(interval time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	s.interval, s.cancel, s.done = interval, cancel, make(chan struct{})
	started, done := make(chan struct{}), s.done
	go func() {
		defer close(done)
		s.cache.Follow(ctx, keycache.FollowConfig{
			Started:      started,
			PollInterval: interval,
			OnError: func(op string, err error) {
				s.logger.Load().Warn("key store background work failed", zap.String("op", op), zap.Error(err))
			},
			OnRecovered: func(op string) {
				s.logger.Load().Info("key store background work recovered", zap.String("op", op))
			},
		})
	}()
	<-started
}

// stopFollowing ends the background work and waits for it. s.mu must be
// held.
func (s *shared) stopFollowing() {
	s.cancel()
	<-s.done
}

// reconfigure applies the running configuration's logger and poll
// interval. A new interval restarts the background work: the restarted
// follower takes the change log's head and drops the cache (which is then
// refilled from the store), so no change made in between is missed.
func (s *shared) reconfigure(interval time.Duration, logger *zap.Logger) {
	s.logger.Store(logger)
	s.mu.Lock()
	defer s.mu.Unlock()
	if interval != s.interval {
		s.stopFollowing()
		s.follow(interval)
	}
}

// Destruct stops the background work and closes cache and store.
func (s *shared) Destruct() error {
	s.stopPruning()
	s.mu.Lock()
	s.stopFollowing()
	s.mu.Unlock()
	s.cache.Close()
	return s.store.Close()
}

// pollInterval is the change-log poll interval a configuration asks for.
func (a *App) pollInterval() time.Duration {
	if a.ChangePollInterval == 0 {
		return keycache.DefaultPollInterval
	}
	return time.Duration(a.ChangePollInterval)
}

// Provision opens (or reuses) the store and cache.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	// Check what can be checked before the store is opened and migrated.
	if err := a.Validate(); err != nil {
		return err
	}
	if len(a.APIPlans) == 0 {
		a.APIPlans = DefaultAPIPlans
	}
	plans := make([]string, len(a.APIPlans))
	for i, p := range a.APIPlans {
		plans[i] = strings.ToLower(p)
	}
	a.APIPlans = plans
	a.UpgradeURL = caddy.NewReplacer().ReplaceKnown(a.UpgradeURL, "")
	if a.UpgradeURL == "" {
		a.UpgradeURL = DefaultUpgradeURL
	}
	if a.StorageRaw == nil {
		a.StorageRaw = json.RawMessage(`{"driver":"sqlite"}`)
	}
	mod, err := ctx.LoadModule(a, "StorageRaw")
	if err != nil {
		return fmt.Errorf("loading storage module: %w", err)
	}
	a.storage = mod.(StoreOpener)
	a.poolKey = a.storage.PoolKey()
	cfg := keycache.Config{TTL: time.Duration(a.CacheTTL), NegativeTTL: time.Duration(a.NegativeCacheTTL), Now: testKeysClock}
	val, loaded, err := stores.LoadOrNew(a.poolKey, func() (caddy.Destructor, error) {
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		st, err := a.storage.OpenStore(octx)
		if err != nil {
			return nil, err
		}
		c, err := keycache.New(st, cfg)
		if err != nil {
			st.Close()
			return nil, err
		}
		s := &shared{store: st, cache: c}
		s.logger.Store(a.logger)
		s.mu.Lock()
		s.follow(a.pollInterval())
		s.mu.Unlock()
		s.retention.Store(int64(a.eventRetention()))
		s.startPruning()
		return s, nil
	})
	if err != nil {
		return fmt.Errorf("opening key store: %w", err)
	}
	a.shared = val.(*shared)
	a.shared.retention.Store(int64(a.eventRetention()))
	if loaded {
		if err := a.shared.cache.SetTTLs(cfg.TTL, cfg.NegativeTTL); err != nil {
			stores.Delete(a.poolKey)
			a.shared = nil
			return err
		}
	}
	a.manager = &keys.Manager{Store: a.shared.store, Cache: a.shared.cache, Now: testKeysClock, AuditLog: a.logger.Named("audit")}
	if err := a.provisionLimits(); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	if err := registerMetrics(ctx, a.shared.cache); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	return nil
}

// MaxChangePollInterval bounds change_poll_interval: a longer one would
// leave revocations made elsewhere unseen for too long when notifications
// are not available (SQLite, or PostgreSQL through a transaction pooler).
const MaxChangePollInterval = time.Minute

// Validate checks every duration and the plans, whether they came from a
// Caddyfile or from JSON. Zero means the default.
func (a *App) Validate() error {
	if err := checkDuration("cache_ttl", a.CacheTTL, keycache.MaxTTL); err != nil {
		return err
	}
	if err := checkDuration("negative_cache_ttl", a.NegativeCacheTTL, keycache.MaxNegativeTTL); err != nil {
		return err
	}
	if err := checkDuration("change_poll_interval", a.ChangePollInterval, MaxChangePollInterval); err != nil {
		return err
	}
	if err := a.validateLimits(); err != nil {
		return err
	}
	if err := a.validateRetention(); err != nil {
		return err
	}
	return checkPlans(a.APIPlans)
}

// checkDuration checks that an optional duration is 0 (the default) or
// positive and at most max.
func checkDuration(name string, d caddy.Duration, max time.Duration) error {
	if d < 0 || time.Duration(d) > max {
		return fmt.Errorf("%s %s out of range: it must be positive and at most %s (0 or absent: the default)", name, time.Duration(d), max)
	}
	return nil
}

// checkPlans refuses an empty plan name: an account whose plan was never
// recorded has the plan "", so listing "" (say, from an unset environment
// variable) would give every such account API access.
func checkPlans(plans []string) error {
	for _, p := range plans {
		if strings.TrimSpace(p) == "" {
			return fmt.Errorf("api_plans: a plan name must not be empty (an account without a recorded plan has the empty plan)")
		}
	}
	return nil
}

// running is the app of the running configuration, for the admin API.
var running atomic.Pointer[App]

// Start makes this app the one the admin API uses, and its logger and
// change_poll_interval those of the shared store and cache (a reload that
// changes them takes effect; see docs/operations.md). It warns about
// access logs that would record keys.
func (a *App) Start() error {
	a.shared.reconfigure(a.pollInterval(), a.logger)
	a.warnAccessLogs(a.ctx)
	running.Store(a)
	return nil
}

// Stop stops the app; store and cache live on while another configuration
// uses them.
func (a *App) Stop() error {
	running.CompareAndSwap(a, nil)
	return nil
}

// Cleanup releases this configuration's hold on the store and cache.
func (a *App) Cleanup() error {
	if a.shared == nil {
		return nil
	}
	a.cleanupLimits()
	_, err := stores.Delete(a.poolKey)
	return err
}

// Cache returns the cache of verified keys.
func (a *App) Cache() *keycache.Cache { return a.shared.cache }

// Keys returns the manager through which keys are created and revoked.
func (a *App) Keys() *keys.Manager { return a.manager }

// PlanHasAPIAccess reports whether plan is one of APIPlans, in any letter
// case (plans are recorded in lower case).
func (a *App) PlanHasAPIAccess(plan string) bool {
	for _, p := range a.APIPlans {
		if strings.EqualFold(p, plan) {
			return true
		}
	}
	return false
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ caddy.Destructor   = (*shared)(nil)
)
