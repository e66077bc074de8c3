package caddymodule

import (
	"fmt"
	"strings"

	"github.com/spkgate/spkgate/scope"
)

// policyRules returns the rules of a built-in policy ("" for none, or
// "statuspage" at base, default /v1) followed by extra. spk_auth enforces
// them and spk_console explores them; both build them here, so that the
// same configuration gives the same routes.
func policyRules(policy, base string, extra []scope.Rule) ([]scope.Rule, error) {
	var rules []scope.Rule
	switch policy {
	case "":
		if base != "" {
			return nil, fmt.Errorf("base_path %q given without a policy", base)
		}
	case "statuspage":
		if base == "" {
			base = "/v1"
		}
		if !strings.HasPrefix(base, "/") || strings.Contains(base, "*") {
			return nil, fmt.Errorf("policy base path %q must be a path starting with /", base)
		}
		rules = scope.StatusPage(base)
		if _, err := scope.Compile(rules); err != nil {
			return nil, fmt.Errorf("policy base path %q must be a plain path: no empty or dot segments, %%, \\, ? or #", base)
		}
	default:
		return nil, fmt.Errorf("unknown policy %q (known: statuspage)", policy)
	}
	return append(rules, extra...), nil
}
