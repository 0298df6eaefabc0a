package web

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Headers a cross-origin caller may send and read: those of the Connect,
// gRPC-Web and REST protocols, the bearer token, and the cache's own
// metadata (dry run, asking which replica answered).
var (
	corsMethods        = "GET, POST, PUT"
	corsAllowHeaders   = "Authorization, Content-Type, Connect-Protocol-Version, Connect-Timeout-Ms, Grpc-Timeout, X-Grpc-Web, X-User-Agent, X-Replica, Dry-Run"
	corsExposedHeaders = "Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, X-Replica, Content-Disposition"
)

// cors lets pages from the allowed origins call the API. Requests from
// other origins get no CORS headers, so browsers keep their pages from
// reading the answers; preflights from them are refused outright.
func cors(origins []string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		h := w.Header()
		h.Add("Vary", "Origin")
		allowed := origin != "" && slices.Contains(origins, origin)
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if preflight {
			h.Add("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers")
			if !allowed {
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Methods", corsMethods)
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", "7200")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if allowed {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", corsExposedHeaders)
		}
		next.ServeHTTP(w, r)
	})
}

// ParseOrigins reads a comma-separated list of origins (a flag's value):
// each is scheme://host[:port], without a path.
func ParseOrigins(s string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(s, ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, fmt.Errorf("origin %q: want scheme://host[:port], e.g. https://console.example.com", o)
		}
		out = append(out, u.Scheme+"://"+u.Host)
	}
	return out, nil
}
