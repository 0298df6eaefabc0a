package cli

import (
	"fmt"
	"log/slog"
	"os"
)

// FormatLogger is Logger with a format: "text" or "json" (one object per
// line, for log collectors). The servers add each call's trace_id, span_id
// and tenant to the lines they log.
func FormatLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	o := &slog.HandlerOptions{Level: l}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, o)), nil
	}
	return nil, fmt.Errorf("log format %q: use text or json", format)
}
