package server

import (
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/resolver/dns"
)

// TestMain fails the package's tests if any goroutine outlives them. It
// also lowers grpc-go's minimum time between two DNS resolutions of one
// channel (30s) for the tests that change a DNS answer: the setting is
// process-wide and must precede every channel. A connection closed after
// an answer to a body the server did not read (413, 408) lingers half a
// second in net/http on purpose (so the client reads the answer before a
// reset), past any Shutdown.
func TestMain(m *testing.M) {
	dns.SetMinResolutionInterval(100 * time.Millisecond)
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
}
