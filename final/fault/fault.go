// Package fault is the domain's error vocabulary: the errors the cache and
// Accounts return, each with a stable Reason. It knows nothing of gRPC;
// package apierr maps these errors to status codes and details at the
// service boundary, and back again when a replica reads Accounts' answers.
package fault

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Reason is a stable, machine-readable cause. It travels to clients as
// errdetails.ErrorInfo.Reason, so a value never changes once released;
// final/README.md lists them all.
type Reason string

// The reasons a client can receive.
const (
	InvalidArgument     Reason = "INVALID_ARGUMENT"     // a request field or metadata is malformed
	KeyNotFound         Reason = "KEY_NOT_FOUND"        // Get of a key the tenant does not have
	NotFound            Reason = "NOT_FOUND"            // something else not found, said by gRPC's own services (health: an unknown service)
	Unauthenticated     Reason = "UNAUTHENTICATED"      // missing or malformed bearer token
	UnknownToken        Reason = "UNKNOWN_TOKEN"        // a well-formed token no account has
	QuotaExceeded       Reason = "QUOTA_EXCEEDED"       // a Store beyond the tenant's max_cache_keys or max_cache_bytes (Quota says which)
	RateLimited         Reason = "RATE_LIMITED"         // over a rate limit; RetryInfo says when to retry
	TooLarge            Reason = "TOO_LARGE"            // a request body over the HTTP listener's limit
	LeaseNotFound       Reason = "LEASE_NOT_FOUND"      // Accounts to a replica: the lease lapsed, report again
	NotAReplica         Reason = "NOT_A_REPLICA"        // Accounts: the caller's certificate names no replica, or another replica than the lease's
	TooManyLeases       Reason = "TOO_MANY_LEASES"      // Accounts: the caller's identity holds MaxLeasesPerOwner leases already
	AccountsUnavailable Reason = "ACCOUNTS_UNAVAILABLE" // the replica could not reach Accounts
	LedgerRecovering    Reason = "LEDGER_RECOVERING"    // Accounts just started without its ledger on disk: no new slots yet
	ReplicaFenced       Reason = "REPLICA_FENCED"       // the replica's own lease deadline passed: it serves none of its keys until it re-registers
	RevisionMismatch    Reason = "REVISION_MISMATCH"    // a conditional Store whose condition no longer holds (the key changed, or exists)
	DeadlineExceeded    Reason = "DEADLINE_EXCEEDED"    // the call's deadline passed
	Canceled            Reason = "CANCELED"             // the caller went away
	Unavailable         Reason = "UNAVAILABLE"          // the server is stopping or unreachable
	Internal            Reason = "INTERNAL"             // anything unexpected; details are only in the server's log
)

// Error is a domain error. Msg is safe to show a client; Err (the cause)
// is not, and only reaches the server's log.
type Error struct {
	Reason Reason
	Msg    string
	// Field names the offending request field (InvalidArgument).
	Field string
	// Subject is what a limit applies to: "tenant:NAME" (QuotaExceeded) or
	// the rate limit's scope (RateLimited).
	Subject string
	// Limit is the quota that was reached (QuotaExceeded), and Quota its
	// name: "max_cache_keys" or "max_cache_bytes".
	Limit int64
	Quota string
	// RetryAfter is when a retry may succeed (RateLimited, LedgerRecovering,
	// ReplicaFenced).
	RetryAfter time.Duration
	// Revision is the key's current revision (RevisionMismatch; 0: the
	// key does not exist).
	Revision int64
	Err      error
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return string(e.Reason)
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes the sentinels below match any error of their reason:
// errors.Is(err, fault.ErrKeyNotFound).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Msg == "" && t.Reason == e.Reason
}

// Sentinels for errors.Is; match by reason.
var (
	ErrInvalidArgument     = &Error{Reason: InvalidArgument}
	ErrKeyNotFound         = &Error{Reason: KeyNotFound}
	ErrUnauthenticated     = &Error{Reason: Unauthenticated}
	ErrUnknownToken        = &Error{Reason: UnknownToken}
	ErrQuotaExceeded       = &Error{Reason: QuotaExceeded}
	ErrRateLimited         = &Error{Reason: RateLimited}
	ErrLeaseNotFound       = &Error{Reason: LeaseNotFound}
	ErrAccountsUnavailable = &Error{Reason: AccountsUnavailable}
	ErrLedgerRecovering    = &Error{Reason: LedgerRecovering}
	ErrReplicaFenced       = &Error{Reason: ReplicaFenced}
	ErrRevisionMismatch    = &Error{Reason: RevisionMismatch}
)

// ReasonOf is err's reason; "" for an error that is not a domain error.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// BadField reports a malformed request field or metadata.
func BadField(field, format string, args ...any) error {
	return &Error{Reason: InvalidArgument, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// StaleReport refuses report number report of lease id when last, the
// number of the last report applied, is not below it: the replica sent
// it before that one (and gave up on it), so its holdings are older. A
// report numbered 0 (a replica from before numbering) is not refused.
func StaleReport(id string, report, last int64) error {
	if report > 0 && report <= last {
		return BadField("report", "report %d of lease %q arrived after report %d: its holdings are older", report, id, last)
	}
	return nil
}

// NoKey reports a key the tenant does not have.
func NoKey(key string) error {
	return &Error{Reason: KeyNotFound, Msg: fmt.Sprintf("key %q not found", key)}
}

// NotAuthenticated reports a missing or malformed credential.
func NotAuthenticated(msg string) error {
	return &Error{Reason: Unauthenticated, Msg: msg}
}

// NoAccount reports a token that no account has.
func NoAccount() error {
	return &Error{Reason: UnknownToken, Msg: "unknown account token"}
}

// The quotas a tenant has, as QuotaFailure and ErrorInfo name them.
const (
	MaxCacheKeys  = "max_cache_keys"
	MaxCacheBytes = "max_cache_bytes"
)

// bytesSuffix makes a tenant's name the name of its byte budget in the
// quota ledger, which counts it as it counts the tenant's key slots (a
// NUL byte: no tenant name has one).
const bytesSuffix = "\x00bytes"

// BytesOf is the ledger's name of tenant's byte budget.
func BytesOf(tenant string) string { return tenant + bytesSuffix }

// BytesTenant is the tenant whose byte budget name is, or false when name
// is a tenant's key slots.
func BytesTenant(name string) (string, bool) {
	return strings.CutSuffix(name, bytesSuffix)
}

// OverQuota refuses a Store: the tenant's keys (or, for the name
// BytesOf(tenant), its bytes) across all replicas would exceed max.
func OverQuota(name string, max int64) error {
	if tenant, ok := BytesTenant(name); ok {
		return &Error{
			Reason: QuotaExceeded, Subject: "tenant:" + tenant, Limit: max, Quota: MaxCacheBytes,
			Msg: fmt.Sprintf("account exceeds max byte limit %d", max),
		}
	}
	return &Error{
		Reason: QuotaExceeded, Subject: "tenant:" + name, Limit: max, Quota: MaxCacheKeys,
		Msg: fmt.Sprintf("account exceeds max key limit %d", max),
	}
}

// OverRate refuses a call over the rate limit of scope.
func OverRate(scope string, retryAfter time.Duration) error {
	return &Error{Reason: RateLimited, Subject: scope, RetryAfter: retryAfter, Msg: scope + " is over rate limit"}
}

// Forbidden says the caller's identity may not do this (NotAReplica).
func Forbidden(format string, args ...any) error {
	return &Error{Reason: NotAReplica, Msg: fmt.Sprintf(format, args...)}
}

// NoLease tells a replica that its lease lapsed (or Accounts restarted).
func NoLease(id string) error {
	return &Error{Reason: LeaseNotFound, Msg: fmt.Sprintf("no lease %q", id)}
}

// AccountsDown reports that Accounts could not be reached; cause is logged,
// not shown.
func AccountsDown(cause error) error {
	return &Error{Reason: AccountsUnavailable, Msg: "accounts service unavailable", Err: cause}
}

// Recovering refuses a new slot while Accounts, started without its ledger
// on disk, waits for the replicas to report what they hold.
func Recovering(retryAfter time.Duration) error {
	return &Error{Reason: LedgerRecovering, RetryAfter: retryAfter,
		Msg: fmt.Sprintf("accounts is recovering its ledger: no new keys for %v", retryAfter.Round(time.Millisecond))}
}

// Fenced refuses a key of a replica whose own lease deadline passed: Accounts
// may have given its slots to other replicas, so it serves none of its keys
// until a report renews the lease.
func Fenced(retryAfter time.Duration) error {
	return &Error{Reason: ReplicaFenced, RetryAfter: retryAfter,
		Msg: "this replica's lease at Accounts expired: it serves no keys until it re-registers"}
}

// StaleRevision refuses a conditional Store of key whose condition no
// longer holds; current is the key's revision now (0: it does not exist).
func StaleRevision(key string, current int64) error {
	msg := fmt.Sprintf("key %q is at revision %d", key, current)
	if current == 0 {
		msg = fmt.Sprintf("key %q does not exist", key)
	}
	return &Error{Reason: RevisionMismatch, Revision: current, Msg: msg}
}
