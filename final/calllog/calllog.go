// Package calllog is the one format of a call's log line, shared by the
// server's and the client's logging interceptors.
package calllog

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Level logs successes at Info, caller errors at Warn and server faults at
// Error; a logger set to Warn therefore costs nothing on the happy path.
func Level(code codes.Code) slog.Level {
	switch code {
	case codes.OK:
		return slog.LevelInfo
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
		return slog.LevelError
	default:
		return slog.LevelWarn
	}
}

// Log writes one call's line: method, duration, code and, on failure, the
// status message.
func Log(ctx context.Context, log *slog.Logger, msg, method string, start time.Time, err error) {
	code := status.Code(err)
	lvl := Level(code)
	if !log.Enabled(ctx, lvl) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.Duration("duration", time.Since(start)),
		slog.String("code", code.String()),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
	}
	log.LogAttrs(ctx, lvl, msg, attrs...)
}
