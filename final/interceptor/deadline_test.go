package interceptor

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type ctxKey struct{}

// wait is ch's closing, failing the test if it takes more than a minute
// (a guard against a hang, not a measure of speed).
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Minute):
		t.Fatalf("%s: not done after a minute", what)
	}
}

// The cap behaves as context.WithDeadline does, whichever of Done, Err and
// derived contexts a handler uses first.
func TestTheDeadlineCapEndsTheCallAtTheCap(t *testing.T) {
	parent := context.WithValue(context.Background(), ctxKey{}, "v")

	t.Run("a caller's earlier deadline is kept", func(t *testing.T) {
		early, cancel := context.WithTimeout(parent, time.Second)
		defer cancel()
		ctx, stop := capDeadline(early, time.Hour)
		defer stop()
		assert.Equal(t, early, ctx)
	})

	t.Run("the deadline and values", func(t *testing.T) {
		before := time.Now()
		ctx, stop := capDeadline(parent, time.Hour)
		defer stop()
		dl, ok := ctx.Deadline()
		require.True(t, ok)
		assert.False(t, dl.Before(before.Add(time.Hour)), "the deadline is an hour from the call")
		assert.Equal(t, "v", ctx.Value(ctxKey{}))
		assert.NoError(t, ctx.Err())
		assert.NoError(t, context.Cause(ctx))
	})

	t.Run("Err says DeadlineExceeded at the cap without anyone waiting on Done", func(t *testing.T) {
		ctx, stop := capDeadline(parent, time.Millisecond)
		defer stop()
		dl, _ := ctx.Deadline()
		for time.Now().Before(dl) {
			time.Sleep(time.Until(dl))
		}
		assert.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
		assert.ErrorIs(t, context.Cause(ctx), context.DeadlineExceeded)
		wait(t, ctx.Done(), "Done after Err said the deadline passed")
		assert.Equal(t, "v", ctx.Value(ctxKey{}))
	})

	t.Run("Err asked often says DeadlineExceeded at the cap", func(t *testing.T) {
		ctx, stop := capDeadline(parent, 10*time.Millisecond)
		defer stop()
		for range 2 * errsBeforeTimer {
			if err := ctx.Err(); err != nil {
				dl, _ := ctx.Deadline()
				require.False(t, time.Now().Before(dl), "Err said %v before the deadline", err)
			}
		}
		for ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		assert.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
		wait(t, ctx.Done(), "Done after Err said the deadline passed")
	})

	t.Run("Done closes at the cap, and a derived context with it", func(t *testing.T) {
		ctx, stop := capDeadline(parent, 10*time.Millisecond)
		defer stop()
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		wait(t, child.Done(), "the derived context")
		wait(t, ctx.Done(), "the capped context")
		assert.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
		assert.ErrorIs(t, child.Err(), context.DeadlineExceeded)
	})

	t.Run("the caller's cancel ends it, before or after Done", func(t *testing.T) {
		for _, doneFirst := range []bool{false, true} {
			p, cancel := context.WithCancel(parent)
			ctx, stop := capDeadline(p, time.Hour)
			var done <-chan struct{}
			if doneFirst {
				done = ctx.Done()
			}
			cancel()
			assert.ErrorIs(t, ctx.Err(), context.Canceled, "Done first: %v", doneFirst)
			if !doneFirst {
				done = ctx.Done()
			}
			wait(t, done, "Done after the caller's cancel")
			assert.ErrorIs(t, context.Cause(ctx), context.Canceled)
			stop()
		}
	})

	t.Run("stop ends the timer, and many goroutines may ask at once", func(t *testing.T) {
		ctx, stop := capDeadline(parent, time.Hour)
		var wg sync.WaitGroup
		chans := make([]<-chan struct{}, 8)
		for i := range chans {
			wg.Go(func() {
				_ = ctx.Err()
				chans[i] = ctx.Done()
			})
		}
		wg.Wait()
		for _, ch := range chans[1:] {
			assert.Equal(t, chans[0], ch, "one timer, one Done channel")
		}
		stop()
		wait(t, ctx.Done(), "Done after stop")
		assert.ErrorIs(t, ctx.Err(), context.Canceled)

		// Stopped before anyone asked: canceled all the same.
		ctx, stop = capDeadline(parent, time.Hour)
		stop()
		assert.ErrorIs(t, ctx.Err(), context.Canceled)
		wait(t, ctx.Done(), "Done asked for after stop")
	})
}
