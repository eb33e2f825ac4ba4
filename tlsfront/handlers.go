package tlsfront

import (
	"net"
	"net/http"
	"strconv"
	"strings"
)

// ACMEChallengePath is where ACME HTTP-01 validation requests go (RFC 8555, 8.3).
const ACMEChallengePath = "/.well-known/acme-challenge/"

// RedirectHandler answers every request with a redirect to the same host, path and query
// over HTTPS, on the port that port returns (left out when it is 443 or 0), with status.
// port is read per request, so that it can name a port bound after the handler was built.
// Requests under ACMEChallengePath are not redirected but passed to challenges: an ACME
// CA validating a name must get the answer on plain HTTP.
func RedirectHandler(status int, port func() int, challenges http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, ACMEChallengePath) {
			challenges.ServeHTTP(w, r)
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" || strings.ContainsAny(host, "/\\@ ") {
			http.Error(w, "400 bad request: no usable Host header to redirect to", http.StatusBadRequest)
			return
		}
		if strings.Contains(host, ":") { // an IPv6 literal lost its brackets in SplitHostPort
			host = "[" + host + "]"
		}
		if p := port(); p != 0 && p != 443 {
			host += ":" + strconv.Itoa(p)
		}
		target := "https://" + host + r.URL.RequestURI()
		http.Redirect(w, r, target, status)
	})
}

// HSTS sets the Strict-Transport-Security header to value on every response of next. It
// is set before next runs, so it comes first when the upstream sends its own, and
// browsers honour the first (RFC 6797, 8.1).
func HSTS(value string, next http.Handler) http.Handler {
	if value == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", value)
		next.ServeHTTP(w, r)
	})
}
