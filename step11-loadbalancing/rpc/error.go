package rpc

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// User error codes: which of the cache's rules refused a call, finer than a
// gRPC code, for a program to act on (show "upgrade your plan", not "error").
const (
	UserErrorInvalidArgument int64 = 1
	UserErrorKeyNotFound     int64 = 2
	UserErrorOverQuota       int64 = 3
	UserErrorUnknownToken    int64 = 4
)

// Error makes the generated message a Go error, so a server can return it.
func (e *Error) Error() string { return e.GetMessage() }

// GRPCStatus is what grpc-go sends for a returned error: the code and message
// that every client understands, with e itself attached as a detail (the
// grpc-status-details-bin trailer) for clients that want the rest.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(codes.Code(e.GetCode()), e.GetMessage())
	if detailed, err := st.WithDetails(e); err == nil {
		return detailed
	}
	return st
}

// Errorf returns an Error with a formatted message.
func Errorf(code codes.Code, temporary bool, format string, args ...any) *Error {
	return &Error{Code: int64(code), Message: fmt.Sprintf(format, args...), Temporary: temporary}
}

// FromError returns the Error a server attached to err's status, if any.
func FromError(err error) (*Error, bool) {
	for _, d := range status.Convert(err).Details() {
		if e, ok := d.(*Error); ok {
			return e, true
		}
	}
	return nil, false
}
