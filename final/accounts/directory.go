package accounts

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"

	"grpcworkshop.example/final/fault"
)

//go:embed accounts.json
var defaultAccounts []byte

// Account is what a token grants: the tenant whose data it reaches, and
// how many keys, and bytes (len(key) + len(value) of each item; 0: no
// byte cap), that tenant may hold across all replicas.
type Account struct {
	Tenant        string
	MaxCacheKeys  int64
	MaxCacheBytes int64
}

// Directory is an immutable set of accounts: tokens to accounts, and the
// limits of every tenant. Replace it as a whole to change accounts.
type Directory struct {
	byToken  map[string]Account
	byTenant map[string]Account
}

// unlimited is the byte budget of a tenant without a byte cap: the ledger
// counts its bytes, and grants whatever a replica asks.
const unlimited = math.MaxInt64 / 4

// max is the limit of a name the ledger counts: a tenant's key slots, or
// its byte budget (fault.BytesOf). A name no account has gets 0.
func (d *Directory) max(name string) int64 {
	if tenant, ok := fault.BytesTenant(name); ok {
		a, ok := d.byTenant[tenant]
		switch {
		case !ok:
			return 0
		case a.MaxCacheBytes == 0:
			return unlimited
		}
		return a.MaxCacheBytes
	}
	return d.byTenant[name].MaxCacheKeys
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

// Parse reads {"TOKEN": {"tenant": "NAME", "max_cache_keys": N,
// "max_cache_bytes": B}, ...}. The tenant defaults to the token; tokens of
// one tenant share its data and must agree on its limits. max_cache_bytes
// is optional (absent or 0: no byte cap).
func Parse(data []byte) (*Directory, error) {
	var raw map[string]struct {
		Tenant        string `json:"tenant"`
		MaxCacheKeys  *int64 `json:"max_cache_keys"`
		MaxCacheBytes int64  `json:"max_cache_bytes"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse accounts: %w", err)
	}
	d := &Directory{byToken: make(map[string]Account, len(raw)), byTenant: make(map[string]Account)}
	for token, a := range raw {
		tenant := a.Tenant
		if tenant == "" {
			tenant = token
		}
		switch {
		case token == "":
			return nil, fmt.Errorf("parse accounts: empty token")
		case strings.ContainsRune(tenant, 0):
			return nil, fmt.Errorf("parse accounts: tenant %q has a NUL byte", tenant)
		case a.MaxCacheKeys == nil || *a.MaxCacheKeys < 0:
			return nil, fmt.Errorf("parse accounts: token %q needs max_cache_keys >= 0", token)
		case a.MaxCacheBytes < 0 || a.MaxCacheBytes >= unlimited:
			return nil, fmt.Errorf("parse accounts: token %q needs max_cache_bytes >= 0 and below %d (0: no byte cap)", token, int64(unlimited))
		}
		acct := Account{Tenant: tenant, MaxCacheKeys: *a.MaxCacheKeys, MaxCacheBytes: a.MaxCacheBytes}
		if m, ok := d.byTenant[tenant]; ok && m.MaxCacheKeys != acct.MaxCacheKeys {
			return nil, fmt.Errorf("parse accounts: tenant %q has two different max_cache_keys", tenant)
		}
		if m, ok := d.byTenant[tenant]; ok && m.MaxCacheBytes != acct.MaxCacheBytes {
			return nil, fmt.Errorf("parse accounts: tenant %q has two different max_cache_bytes", tenant)
		}
		d.byTenant[tenant] = acct
		d.byToken[token] = acct
	}
	return d, nil
}

// Accounts builds a directory in code (tests, embedding).
func Accounts(byToken map[string]Account) *Directory {
	d := &Directory{byToken: make(map[string]Account, len(byToken)), byTenant: make(map[string]Account)}
	for tok, a := range byToken {
		if a.Tenant == "" {
			a.Tenant = tok
		}
		d.byToken[tok] = a
		d.byTenant[a.Tenant] = a
	}
	return d
}
