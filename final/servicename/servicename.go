// Package servicename is where a service made from this starter names itself
// (docs/starter.md): set Name, and the ErrorInfo domain of its errors and
// the common name of its development CA follow.
package servicename

// Name is the service's name, in the form of the ErrorInfo domain Google's
// APIs use (a DNS-like name the service owns, e.g. "kv.acme.example").
const Name = "cache.grpcworkshop"

// ErrorDomain is the domain of every google.rpc.ErrorInfo the service
// sends: clients tell its errors apart from others' by it.
const ErrorDomain = Name

// DevCA is the common name of the development CA that devstack and
// gensecrets create, so that a certificate says which service made it.
const DevCA = Name + " development CA"
