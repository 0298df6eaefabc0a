// Package apierr is the one boundary between the domain's errors (package
// fault) and gRPC statuses: ToStatus chooses every status code a client of
// the cache or Accounts receives and attaches its details (ErrorInfo
// always; BadRequest, QuotaFailure, RetryInfo where they apply), and
// FromAccounts turns Accounts' answers back into domain errors by their
// ErrorInfo reason. Anything unexpected is Internal with a generic
// message: its text reaches the server's log, never the client.
package apierr

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"grpcworkshop.example/final/fault"
	"grpcworkshop.example/final/servicename"
)

// Domain is the ErrorInfo domain of every error the cache and Accounts send
// (set where the service names itself: package servicename).
const Domain = servicename.ErrorDomain

// codeOf is the status code of each reason: the only place codes are chosen.
var codeOf = map[fault.Reason]codes.Code{
	fault.InvalidArgument:     codes.InvalidArgument,
	fault.KeyNotFound:         codes.NotFound,
	fault.NotFound:            codes.NotFound,
	fault.Unauthenticated:     codes.Unauthenticated,
	fault.UnknownToken:        codes.Unauthenticated,
	fault.QuotaExceeded:       codes.FailedPrecondition, // retrying does not help until the quota changes
	fault.RateLimited:         codes.ResourceExhausted,  // retrying after RetryInfo's delay does
	fault.TooLarge:            codes.ResourceExhausted,  // not retried: RetryInfo is absent
	fault.LeaseNotFound:       codes.NotFound,
	fault.NotAReplica:         codes.PermissionDenied,
	fault.TooManyLeases:       codes.ResourceExhausted, // until one of them lapses or is released
	fault.AccountsUnavailable: codes.Unavailable,
	fault.LedgerRecovering:    codes.Unavailable,        // retrying after RetryInfo's delay does
	fault.ReplicaFenced:       codes.Unavailable,        // likewise, once the replica re-registered
	fault.RevisionMismatch:    codes.FailedPrecondition, // retrying does not help: read the key again
	fault.DeadlineExceeded:    codes.DeadlineExceeded,
	fault.Canceled:            codes.Canceled,
	fault.Unavailable:         codes.Unavailable,
	fault.Internal:            codes.Internal,
}

// Reasons is every reason a client can receive (final/README.md lists them).
func Reasons() []fault.Reason {
	r := make([]fault.Reason, 0, len(codeOf))
	for k := range codeOf {
		r = append(r, k)
	}
	return r
}

// Code is the status code of reason; Internal for an unknown reason.
func Code(reason fault.Reason) codes.Code {
	if c, ok := codeOf[reason]; ok {
		return c
	}
	return codes.Internal
}

const genericInternal = "internal error"

// ToStatus maps err to the status error a client receives: a fault error
// to its reason's code with details; a context error to DeadlineExceeded or
// Canceled; a status from gRPC itself (a failed Send) or its services
// (health) passes through with an ErrorInfo added when it is Canceled,
// DeadlineExceeded, Unavailable or NotFound;
// anything else is Internal with a generic message. nil stays nil.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	return toStatus(err).Err()
}

// ItemStatus is ToStatus for one item of a batch: the google.rpc.Status
// its result carries, with the same code and details a unary call would
// get; nil for nil.
func ItemStatus(err error) *spb.Status {
	if err == nil {
		return nil
	}
	return toStatus(err).Proto()
}

func toStatus(err error) *status.Status {
	var fe *fault.Error
	switch {
	case errors.As(err, &fe):
		return fromFault(fe)
	case errors.Is(err, context.DeadlineExceeded):
		return fromFault(&fault.Error{Reason: fault.DeadlineExceeded, Msg: "deadline exceeded"})
	case errors.Is(err, context.Canceled):
		return fromFault(&fault.Error{Reason: fault.Canceled, Msg: "canceled"})
	}
	if st, ok := status.FromError(err); ok {
		if _, has := info(st); has {
			return st
		}
		switch st.Code() {
		case codes.DeadlineExceeded:
			return withInfo(st, fault.DeadlineExceeded, nil)
		case codes.Canceled:
			return withInfo(st, fault.Canceled, nil)
		case codes.Unavailable:
			return withInfo(st, fault.Unavailable, nil)
		case codes.NotFound:
			// gRPC's own services (health for a service it does not
			// serve): what the protocol says, not a server fault.
			return withInfo(st, fault.NotFound, nil)
		}
	}
	return fromFault(&fault.Error{Reason: fault.Internal})
}

func fromFault(e *fault.Error) *status.Status {
	code := Code(e.Reason)
	msg := e.Msg
	if code == codes.Internal || msg == "" {
		msg = genericInternal
		if code != codes.Internal {
			msg = string(e.Reason)
		}
	}
	md := map[string]string{}
	var details []protoadapt.MessageV1
	switch e.Reason {
	case fault.InvalidArgument, fault.TooLarge:
		md["field"] = e.Field
		details = append(details, &errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: e.Field, Description: msg}},
		})
	case fault.QuotaExceeded:
		quota, unit := fault.MaxCacheKeys, " keys"
		if e.Quota == fault.MaxCacheBytes {
			quota, unit = fault.MaxCacheBytes, " bytes"
		}
		md["subject"], md["limit"], md["quota"] = e.Subject, strconv.FormatInt(e.Limit, 10), quota
		details = append(details, &errdetails.QuotaFailure{
			Violations: []*errdetails.QuotaFailure_Violation{{
				Subject:     e.Subject,
				Description: "at most " + strconv.FormatInt(e.Limit, 10) + unit + " across all replicas",
				QuotaId:     quota,
			}},
		})
	case fault.RateLimited:
		md["subject"] = e.Subject
	case fault.RevisionMismatch:
		md["revision"] = strconv.FormatInt(e.Revision, 10)
	}
	// Any error that says when a retry may succeed (a rate limit, Accounts
	// unreachable) tells the client so.
	if e.RetryAfter > 0 || e.Reason == fault.RateLimited {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
	}
	return withInfo(status.New(code, msg), e.Reason, md, details...)
}

func withInfo(st *status.Status, reason fault.Reason, md map[string]string, more ...protoadapt.MessageV1) *status.Status {
	if len(md) == 0 {
		md = nil
	}
	d, err := st.WithDetails(append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: string(reason), Domain: Domain, Metadata: md}}, more...)...)
	if err != nil {
		return st // only a detail that fails to marshal; none of ours can
	}
	return d
}

func info(st *status.Status) (*errdetails.ErrorInfo, bool) {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei, true
		}
	}
	return nil, false
}

// ReasonOf is the ErrorInfo reason of a status error from this domain; ""
// when it has none. Clients decide by it, not by code.
func ReasonOf(err error) fault.Reason {
	if ei, ok := info(status.Convert(err)); ok && ei.Domain == Domain {
		return fault.Reason(ei.Reason)
	}
	return ""
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

// FromAccounts turns an answer of the Accounts service into a domain error,
// by its ErrorInfo reason: an unknown token, a full quota and a lapsed
// lease keep their reasons (and the quota its subject and limit); a
// deadline stays a deadline; anything else means Accounts is unavailable.
func FromAccounts(err error) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	if ei, ok := info(st); ok && ei.Domain == Domain {
		switch r := fault.Reason(ei.Reason); r {
		case fault.UnknownToken, fault.QuotaExceeded, fault.LeaseNotFound:
			limit, _ := strconv.ParseInt(ei.Metadata["limit"], 10, 64)
			return &fault.Error{Reason: r, Msg: st.Message(), Subject: ei.Metadata["subject"], Limit: limit, Quota: ei.Metadata["quota"], Field: ei.Metadata["field"]}
		case fault.LedgerRecovering:
			d, _ := RetryDelay(err)
			return &fault.Error{Reason: r, Msg: st.Message(), RetryAfter: d}
		case fault.InvalidArgument:
			// The replica sent a bad request: a bug here, not the caller's.
			return &fault.Error{Reason: fault.Internal, Err: err}
		}
	}
	switch st.Code() {
	case codes.DeadlineExceeded:
		return &fault.Error{Reason: fault.DeadlineExceeded, Msg: "accounts service: deadline exceeded", Err: err}
	case codes.Canceled:
		return &fault.Error{Reason: fault.Canceled, Msg: "accounts service: canceled", Err: err}
	}
	return fault.AccountsDown(err)
}

func internalCause(err error, st *status.Status) (error, bool) {
	if st.Code() != codes.Internal {
		return nil, false
	}
	var fe *fault.Error
	if errors.As(err, &fe) && fe.Err != nil {
		return fe.Err, true
	}
	return err, true
}

func logInternal(ctx context.Context, log *slog.Logger, method string, err error, st *status.Status) {
	if cause, ok := internalCause(err, st); ok {
		log.ErrorContext(ctx, "internal error", "method", method, "error", cause)
	}
}

// UnaryServerInterceptor maps every error a handler (or an inner
// interceptor) returns with ToStatus, and logs the cause of Internal ones.
func UnaryServerInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err == nil {
			return resp, nil
		}
		st := toStatus(err)
		logInternal(ctx, log, info.FullMethod, err, st)
		return nil, st.Err()
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams.
func StreamServerInterceptor(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		if err == nil {
			return nil
		}
		st := toStatus(err)
		logInternal(ss.Context(), log, info.FullMethod, err, st)
		return st.Err()
	}
}
