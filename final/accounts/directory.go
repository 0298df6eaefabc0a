package accounts

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
)

//go:embed accounts.json
var defaultAccounts []byte

// Account is what a token grants: the tenant whose data it reaches, and
// how many keys that tenant may hold across all replicas.
type Account struct {
	Tenant       string
	MaxCacheKeys int64
}

// Directory is an immutable set of accounts: tokens to accounts, and the
// key limit of every tenant. Replace it as a whole to change accounts.
type Directory struct {
	byToken     map[string]Account
	maxByTenant map[string]int64
}

// Len is the number of tokens.
func (d *Directory) Len() int { return len(d.byToken) }

// Default is the embedded development accounts: the talk's
// "inconshreveable" (100 keys) and "gopher" (3 keys).
func Default() *Directory {
	d, err := Parse(defaultAccounts)
	if err != nil {
		panic(err) // the embedded file is tested
	}
	return d
}

// Load reads a directory from a JSON file; "" means the embedded defaults.
func Load(path string) (*Directory, error) {
	if path == "" {
		return Default(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read accounts: %w", err)
	}
	return Parse(data)
}

// Parse reads {"TOKEN": {"tenant": "NAME", "max_cache_keys": N}, ...}. The
// tenant defaults to the token; tokens of one tenant share its data and must
// agree on its limit.
func Parse(data []byte) (*Directory, error) {
	var raw map[string]struct {
		Tenant       string `json:"tenant"`
		MaxCacheKeys *int64 `json:"max_cache_keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse accounts: %w", err)
	}
	d := &Directory{byToken: make(map[string]Account, len(raw)), maxByTenant: make(map[string]int64)}
	for token, a := range raw {
		tenant := a.Tenant
		if tenant == "" {
			tenant = token
		}
		switch {
		case token == "":
			return nil, fmt.Errorf("parse accounts: empty token")
		case a.MaxCacheKeys == nil || *a.MaxCacheKeys < 0:
			return nil, fmt.Errorf("parse accounts: token %q needs max_cache_keys >= 0", token)
		}
		if m, ok := d.maxByTenant[tenant]; ok && m != *a.MaxCacheKeys {
			return nil, fmt.Errorf("parse accounts: tenant %q has two different max_cache_keys", tenant)
		}
		d.maxByTenant[tenant] = *a.MaxCacheKeys
		d.byToken[token] = Account{Tenant: tenant, MaxCacheKeys: *a.MaxCacheKeys}
	}
	return d, nil
}

// Accounts builds a directory in code (tests, embedding).
func Accounts(byToken map[string]Account) *Directory {
	d := &Directory{byToken: make(map[string]Account, len(byToken)), maxByTenant: make(map[string]int64)}
	for tok, a := range byToken {
		if a.Tenant == "" {
			a.Tenant = tok
		}
		d.byToken[tok] = a
		d.maxByTenant[a.Tenant] = a.MaxCacheKeys
	}
	return d
}
