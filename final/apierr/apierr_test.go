package apierr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/fault"
)

func TestToStatusChoosesCodesAndDetails(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   codes.Code
		reason fault.Reason
		msg    string
	}{
		{fault.BadField("key", "key must not be empty"), codes.InvalidArgument, fault.InvalidArgument, "key must not be empty"},
		{fmt.Errorf("wrapped: %w", fault.NoKey("k")), codes.NotFound, fault.KeyNotFound, `key "k" not found`},
		{fault.NoAccount(), codes.Unauthenticated, fault.UnknownToken, "unknown account token"},
		{fault.OverQuota("t", 3), codes.FailedPrecondition, fault.QuotaExceeded, "account exceeds max key limit 3"},
		{fault.OverRate("service", time.Second), codes.ResourceExhausted, fault.RateLimited, "service is over rate limit"},
		{fault.AccountsDown(errors.New("dial tcp: secret")), codes.Unavailable, fault.AccountsUnavailable, "accounts service unavailable"},
		{context.DeadlineExceeded, codes.DeadlineExceeded, fault.DeadlineExceeded, "deadline exceeded"},
		{status.Error(codes.Canceled, "context canceled"), codes.Canceled, fault.Canceled, "context canceled"},
		{status.Error(codes.NotFound, "unknown service"), codes.NotFound, fault.NotFound, "unknown service"}, // health (issue 24, item 7)
		{errors.New("secret"), codes.Internal, fault.Internal, "internal error"},
		{status.Error(codes.Unknown, "secret"), codes.Internal, fault.Internal, "internal error"},
	} {
		err := ToStatus(tc.err)
		assert.Equal(t, tc.code, status.Code(err), "%v", tc.err)
		assert.Equal(t, tc.reason, ReasonOf(err), "%v", tc.err)
		assert.Equal(t, tc.msg, status.Convert(err).Message(), "%v", tc.err)
	}
	assert.NoError(t, ToStatus(nil))

	var qf *errdetails.QuotaFailure
	var br *errdetails.BadRequest
	for _, d := range status.Convert(ToStatus(fault.OverQuota("t", 3))).Details() {
		qf, _ = d.(*errdetails.QuotaFailure)
		if qf != nil {
			break
		}
	}
	require.NotNil(t, qf)
	assert.Equal(t, "tenant:t", qf.Violations[0].Subject)
	for _, d := range status.Convert(ToStatus(fault.BadField("val", "too big"))).Details() {
		if b, ok := d.(*errdetails.BadRequest); ok {
			br = b
		}
	}
	require.NotNil(t, br)
	assert.Equal(t, "val", br.FieldViolations[0].Field)
	d, ok := RetryDelay(ToStatus(fault.OverRate("s", 3*time.Second)))
	assert.True(t, ok)
	assert.Equal(t, 3*time.Second, d)
}

func TestFromAccountsDecidesByReasonNotCode(t *testing.T) {
	// A lapsed lease and an unknown token are both NotFound-ish; the
	// reason tells them apart.
	assert.ErrorIs(t, FromAccounts(ToStatus(fault.NoLease("r1"))), fault.ErrLeaseNotFound)
	assert.ErrorIs(t, FromAccounts(ToStatus(fault.NoAccount())), fault.ErrUnknownToken)
	assert.NotErrorIs(t, FromAccounts(ToStatus(fault.NoAccount())), fault.ErrLeaseNotFound)

	var fe *fault.Error
	require.ErrorAs(t, FromAccounts(ToStatus(fault.OverQuota("t", 7))), &fe)
	assert.Equal(t, fault.QuotaExceeded, fe.Reason)
	assert.Equal(t, "tenant:t", fe.Subject)
	assert.EqualValues(t, 7, fe.Limit)

	assert.ErrorIs(t, FromAccounts(status.Error(codes.NotFound, "no reason")), fault.ErrAccountsUnavailable,
		"a status without our ErrorInfo is not trusted as a lapsed lease")
	assert.ErrorIs(t, FromAccounts(status.Error(codes.Unavailable, "connection refused")), fault.ErrAccountsUnavailable)
	assert.Equal(t, fault.DeadlineExceeded, fault.ReasonOf(FromAccounts(status.Error(codes.DeadlineExceeded, "late"))))
	assert.Equal(t, fault.Internal, fault.ReasonOf(FromAccounts(ToStatus(fault.BadField("lease_id", "required")))))
	assert.NoError(t, FromAccounts(nil))
}

func TestTheDesignDocListsEveryReason(t *testing.T) {
	readme, err := os.ReadFile("../docs/design.md")
	require.NoError(t, err)
	for _, r := range Reasons() {
		assert.True(t, strings.Contains(string(readme), "`"+string(r)+"`"), "final/docs/design.md does not list %s", r)
	}
	assert.Contains(t, string(readme), Domain)
}

func TestAnErrorThatSaysWhenToRetryCarriesRetryInfo(t *testing.T) {
	err := ToStatus(&fault.Error{Reason: fault.AccountsUnavailable, Msg: "accounts service unavailable", RetryAfter: 500 * time.Millisecond})
	assert.Equal(t, codes.Unavailable, status.Code(err))
	d, ok := RetryDelay(err)
	require.True(t, ok, "RetryInfo attached")
	assert.Equal(t, 500*time.Millisecond, d)

	_, ok = RetryDelay(ToStatus(fault.AccountsDown(nil)))
	assert.False(t, ok, "none when the error does not say")
}
