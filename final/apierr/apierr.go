// Package apierr is the one place where the cache and Accounts services
// choose gRPC status codes and attach structured details, so that clients
// can rely on them: QuotaFailure for quotas, RetryInfo for rate limits,
// BadRequest for invalid fields.
package apierr

import (
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// InvalidArgument reports a bad request field.
func InvalidArgument(field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	st := status.New(codes.InvalidArgument, msg)
	if d, err := st.WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: msg}},
	}); err == nil {
		st = d
	}
	return st.Err()
}

// QuotaExceeded refuses a new key: the tenant's keys across all replicas
// would exceed max. FailedPrecondition, not ResourceExhausted: retrying does
// not help until the tenant's quota changes.
func QuotaExceeded(tenant string, max int64) error {
	st := status.Newf(codes.FailedPrecondition, "account exceeds max key limit %d", max)
	if d, err := st.WithDetails(&errdetails.QuotaFailure{
		Violations: []*errdetails.QuotaFailure_Violation{{
			Subject:     "tenant:" + tenant,
			Description: fmt.Sprintf("at most %d keys across all replicas", max),
		}},
	}); err == nil {
		st = d
	}
	return st.Err()
}

// RateLimited refuses a call over a rate limit; RetryInfo says when to retry.
func RateLimited(scope string, retryAfter time.Duration) error {
	st := status.Newf(codes.ResourceExhausted, "%s is over rate limit", scope)
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)}); err == nil {
		st = d
	}
	return st.Err()
}

// Unauthenticated reports a missing, malformed or unknown token.
func Unauthenticated(reason string) error {
	return status.Error(codes.Unauthenticated, reason)
}

// NotFound reports a missing key.
func NotFound(key string) error {
	return status.Errorf(codes.NotFound, "key %q not found", key)
}

// UnknownToken is what Accounts answers for a token it does not know.
func UnknownToken() error {
	return status.Error(codes.NotFound, "no account has this token")
}

// Internal hides the cause from the caller; the server logs it.
func Internal() error {
	return status.Error(codes.Internal, "internal error")
}

// Unavailable reports that a dependency could not be reached: the call may
// succeed if retried, elsewhere or later.
func Unavailable(dependency string, err error) error {
	return status.Errorf(codes.Unavailable, "%s: %s", dependency, status.Convert(err).Message())
}

// LeaseNotFound tells a replica that its lease lapsed and must be renewed.
func LeaseNotFound(id string) error {
	return status.Errorf(codes.NotFound, "no lease %q", id)
}

// IsLeaseNotFound reports whether err is LeaseNotFound.
func IsLeaseNotFound(err error) bool {
	return status.Code(err) == codes.NotFound
}

// FromAccounts maps an error from the Accounts service to what the cache
// tells its own caller: a refused quota passes through unchanged, an unknown
// token is the caller's problem, a deadline stays a deadline, and anything
// else means Accounts is unavailable.
func FromAccounts(err error) error {
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.FailedPrecondition:
		return err
	case codes.NotFound:
		return Unauthenticated("unknown account token")
	case codes.DeadlineExceeded, codes.Canceled:
		return status.Error(status.Code(err), "accounts service: "+status.Convert(err).Message())
	default:
		return Unavailable("accounts service", err)
	}
}

// RetryDelay returns the server's RetryInfo delay, if it sent one.
func RetryDelay(err error) (time.Duration, bool) {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}
