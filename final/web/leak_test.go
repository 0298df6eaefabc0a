package web_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them. A
// connection closed after an answer to a body the server did not read
// (413, 408) lingers half a second in net/http on purpose (so the client
// reads the answer before a reset), past any Shutdown.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
}
