package interceptor

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// capDeadline bounds how long the server works on a call, whatever the
// client asked for (or if it set no deadline at all); max 0 means no cap. The deadline then
// propagates to the calls the server makes on the caller's behalf.
func capDeadline(ctx context.Context, max time.Duration) (context.Context, context.CancelFunc) {
	if max <= 0 {
		return ctx, func() {} // no cap
	}
	now := time.Now()
	if dl, ok := ctx.Deadline(); ok && dl.Sub(now) <= max {
		return ctx, func() {}
	}
	c := &capped{parent: ctx, deadline: now.Add(max)}
	return c, c.stop
}

// capped is the caller's context with its deadline brought forward, as
// context.WithDeadline makes it, but with no timer until someone waits on
// Done. Most calls never do (a Get reads memory and returns), and the
// timer, its context and its entry in the parent's children were a
// tenth of what a replica allocated per call. Err needs no timer: the
// clock says whether the deadline has passed (for its first few calls; a
// call that asks more often is cheaper with the timer). Once anything calls
// Done, or Err finds the call over or asked often, the work is handed to a real
// context.WithDeadline, which from then on answers everything (Value
// included, so contexts derived after that are canceled with it without a
// goroutine of their own).
type capped struct {
	parent   context.Context
	deadline time.Time
	mu       sync.Mutex
	timed    atomic.Pointer[timed]
	stopped  atomic.Bool  // the call is over: the context is canceled
	errs     atomic.Int32 // calls of Err so far
}

// errsBeforeTimer is how many calls of Err read the clock before Err makes
// the timer: a call that asks often (StoreMany asks before each item) is
// then answered by an atomic load, which costs less than reading the clock.
const errsBeforeTimer = 4

type timed struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// start makes the timed context, once.
func (c *capped) start() context.Context {
	if t := c.timed.Load(); t != nil {
		return t.ctx
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.timed.Load(); t != nil {
		return t.ctx
	}
	ctx, cancel := context.WithDeadline(c.parent, c.deadline)
	if c.stopped.Load() { // made after the call ended: canceled before anyone sees it
		cancel()
	}
	c.timed.Store(&timed{ctx, cancel})
	return ctx
}

// stop ends the context, as a CancelFunc does: its timer, if one was made,
// and any made later.
func (c *capped) stop() {
	// Under mu, so no start is between making its context and checking
	// stopped: either it sees stopped, or its context is stored by now.
	c.mu.Lock()
	c.stopped.Store(true)
	t := c.timed.Load()
	c.mu.Unlock()
	if t != nil {
		t.cancel()
	}
}

func (c *capped) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *capped) Done() <-chan struct{} { return c.start().Done() }

func (c *capped) Err() error {
	if t := c.timed.Load(); t != nil {
		return t.ctx.Err()
	}
	if c.errs.Add(1) <= errsBeforeTimer && !c.stopped.Load() && c.parent.Err() == nil && time.Until(c.deadline) > 0 {
		return nil
	}
	// Over, or asked often: the timed context says how (stop or the
	// caller's cancel, or the deadline), as Done and context.Cause will.
	return c.start().Err()
}

func (c *capped) Value(key any) any {
	if t := c.timed.Load(); t != nil {
		return t.ctx.Value(key)
	}
	return c.parent.Value(key)
}
