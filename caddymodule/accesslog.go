package caddymodule

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"unsafe"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/logging"
	"go.uber.org/zap"
)

// accessLogFilter is the log filter that keeps keys out of Caddy's logs:
// Caddy redacts Authorization in the requests it logs, not X-API-Key, and
// logs the URI as it came (a key there is refused, but logged).
const accessLogFilter = `format filter {
	request>headers>X-Api-Key delete
	request>uri regexp spk_[0-9A-Za-z]{36} spk_REDACTED
}`

// warnAccessLogs warns, once per server and load, about each HTTP server
// that runs spk_auth and writes access logs through a log that would
// record the X-API-Key header or a key in the URI: one without a filter on
// request>headers>X-Api-Key and request>uri. What Caddy's logs are made of
// is not exported, so it is read through reflection; if that fails (a
// Caddy whose internals moved), nothing is said.
func (a *App) warnAccessLogs(ctx caddy.Context) {
	httpApp, err := ctx.AppIfConfigured("http")
	if err != nil {
		return
	}
	servers := httpApp.(*caddyhttp.App).Servers
	logs, ok := customLogs(ctx)
	if !ok {
		a.logger.Debug("cannot read the logging configuration: access logs not checked for keys")
		return
	}
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		srv := servers[name]
		if srv.Logs == nil || !routesHaveAuth(srv.Routes) {
			continue
		}
		for _, logger := range accessLoggerNames(srv.Logs) {
			if log := unfilteredLog(logs, logger); log != "" {
				a.logger.Warn("this server's access log would record API keys (X-API-Key, or a key in the URI): add the filter to its log",
					zap.String("server", name), zap.String("log", log), zap.String("filter", accessLogFilter))
				break
			}
		}
	}
}

// routesHaveAuth reports whether an spk_auth handler is among the routes,
// at any depth of subroutes (handle, route, handle_path...).
func routesHaveAuth(routes caddyhttp.RouteList) bool {
	for _, rt := range routes {
		for _, h := range rt.Handlers {
			switch h := h.(type) {
			case *Auth:
				return true
			case *caddyhttp.Subroute:
				if routesHaveAuth(h.Routes) {
					return true
				}
			}
		}
	}
	return false
}

// accessLoggerNames are the names of the loggers a server's access log
// entries are written to.
func accessLoggerNames(slc *caddyhttp.ServerLogConfig) []string {
	var names []string
	for _, ns := range slc.LoggerNames {
		names = append(names, ns...)
	}
	if len(slc.LoggerNames) == 0 || !slc.SkipUnmappedHosts {
		names = append(names, slc.DefaultLoggerName)
	}
	for i, n := range names {
		names[i] = "http.log.access"
		if n != "" {
			names[i] += "." + n
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// customLogs returns the logs of the configuration ctx belongs to.
func customLogs(ctx caddy.Context) (map[string]*caddy.CustomLog, bool) {
	cfg, ok := unexported(reflect.ValueOf(&ctx), "cfg")
	if !ok {
		return nil, false
	}
	c, ok := cfg.Interface().(*caddy.Config)
	if !ok || c == nil || c.Logging == nil {
		return nil, false
	}
	return c.Logging.Logs, true
}

// unfilteredLog returns the name of a log that takes the entries of logger
// without filtering both the X-API-Key header and the URI, or "".
func unfilteredLog(logs map[string]*caddy.CustomLog, logger string) string {
	for _, name := range slices.Sorted(maps.Keys(logs)) {
		cl := logs[name]
		if !loggerAllowed(cl, logger) {
			continue
		}
		enc, ok := unexported(reflect.ValueOf(cl), "encoder")
		if !ok {
			continue
		}
		fe, ok := enc.Interface().(*logging.FilterEncoder)
		if !ok || !filtersKeys(fe.Fields) {
			return name
		}
	}
	return ""
}

// filtersKeys reports whether a filter encoder's fields cover the X-API-Key
// header and the URI.
func filtersKeys(fields map[string]logging.LogFieldFilter) bool {
	var header, uri bool
	for f := range fields {
		header = header || strings.EqualFold(f, "request>headers>X-Api-Key")
		uri = uri || f == "request>uri"
	}
	return header && uri
}

// loggerAllowed reports whether cl takes the entries of the logger named
// name, as Caddy decides it (CustomLog.loggerAllowed, unexported): the
// longest matching namespace of Include and Exclude wins.
func loggerAllowed(cl *caddy.CustomLog, name string) bool {
	if len(cl.Include) == 0 && len(cl.Exclude) == 0 {
		return true
	}
	name += "."
	longest := func(namespaces []string) int {
		n := 0
		for _, ns := range namespaces {
			if strings.HasPrefix(name, ns+".") {
				n = max(n, len(ns))
			}
		}
		return n
	}
	if slices.Contains(cl.Exclude, "*") { // every module's logs
		return false
	}
	accept, reject := longest(cl.Include), longest(cl.Exclude)
	if len(cl.Include) > 0 && accept == 0 {
		return false
	}
	return accept > reject || (len(cl.Include) == 0 && reject == 0)
}

// unexported returns the field name of the struct that v points to,
// exported or not, or false if there is none.
func unexported(v reflect.Value, name string) (reflect.Value, bool) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return reflect.Value{}, false
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct || !v.CanAddr() {
		return reflect.Value{}, false
	}
	f := v.FieldByName(name)
	if !f.IsValid() {
		return reflect.Value{}, false
	}
	return reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem(), true
}
