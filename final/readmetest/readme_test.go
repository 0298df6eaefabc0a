package readmetest

import "testing"

// TestREADMEs runs this module's README.md and docs/*.md, from the
// module's root, as a user of the service runs them (ci.sh runs it with
// README_TESTS=1).
func TestREADMEs(t *testing.T) { Run(t, Module(t, "..")) }

// TestEveryREADMEsMarkersParse runs in every go test ./...: a README whose
// markers do not parse fails at once, not only when the READMEs run.
func TestEveryREADMEsMarkersParse(t *testing.T) { CheckMarkers(t, Module(t, "..")) }
