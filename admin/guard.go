package admin

// What keeps a web page away from the admin endpoints. A browser on the operator's
// machine (or in the pod's network) can reach a loopback listener: a page may post a form
// to it (CSRF), or make its own name resolve to 127.0.0.1 and then read the answers as
// same-origin (DNS rebinding). So, as Caddy's admin API does:
//
//   - every endpoint but the probes answers only a Host that names this listener:
//     a loopback name or address, the address the request came in on, or a name in
//     Options.AllowedHosts. A rebinding page always sends its own name, so it gets 403;
//   - state-changing endpoints (POST) also refuse a cross-site request (Sec-Fetch-Site,
//     Origin; net/http's CrossOriginProtection) and the content types a browser sends
//     cross-site without asking first (text/plain, form encodings): 403 and 415.
//
// Probes are read-only and are called by orchestrators on the pod IP or a service name
// (kubelet's httpGet sets Host to the pod IP), so they answer any Host and need no token.

import (
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// hostAllowed reports whether r's Host names this listener (see the file comment).
func (s *Server) hostAllowed(r *http.Request) bool {
	if r.Host == "" {
		return true // HTTP/1.0 without Host: scripts, never a browser
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	// RFC 6761: localhost and its subdomains are loopback, and browsers resolve them so
	// themselves, so no page can rebind them.
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		// An address in Host is the one the client connected to; only a name can be
		// rebound. Checking it against this connection's own address still refuses
		// an address that is not ours (a forwarding proxy in between).
		return ip.IsLoopback() || ip == localIP(r) || s.allowed[ip.String()]
	}
	return s.allowed[host]
}

// localIP is the address of this host that r arrived on (invalid when unknown).
func localIP(r *http.Request) netip.Addr {
	a, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip, _ := netip.AddrFromSlice(tcp.IP)
	return ip.Unmap()
}

// browserSimpleType reports whether a page may send a request body of media type mt to
// any origin without a CORS preflight (the Fetch standard's CORS-safelisted types).
func browserSimpleType(mt string) bool {
	switch mt {
	case "text/plain", "application/x-www-form-urlencoded", "multipart/form-data":
		return true
	}
	return false
}

// operator guards the endpoints meant for operators and their tools (everything but the
// probes): the Host check, then for unsafe methods the cross-site checks, then the token.
func (s *Server) operator(next http.Handler) http.Handler {
	next = s.authorized(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hostAllowed(r) {
			s.log.Info("admin request refused: Host is not this listener", "host", r.Host, "path", r.URL.Path, "client", r.RemoteAddr)
			plain(w, http.StatusForbidden, fmt.Sprintf("forbidden: Host %q does not name this admin listener; use its address or localhost, or add the name to admin { allowed_hosts = [...] }", r.Host))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := s.crossOrigin.Check(r); err != nil {
				s.log.Info("admin request refused: cross-site", "origin", r.Header.Get("Origin"), "path", r.URL.Path, "client", r.RemoteAddr)
				plain(w, http.StatusForbidden, "forbidden: a cross-site request (Origin or Sec-Fetch-Site) cannot change this process; call it from a script, not a web page")
				return
			}
			if ct := r.Header.Get("Content-Type"); ct != "" {
				mt, _, err := mime.ParseMediaType(ct)
				if err != nil || browserSimpleType(mt) {
					s.log.Info("admin request refused: content type a web page can send", "content_type", ct, "path", r.URL.Path, "client", r.RemoteAddr)
					plain(w, http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported media type %q: send no body (curl -X POST), or Content-Type: application/json", ct))
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// bearerToken is the credentials of an "Authorization: Bearer TOKEN" header; the scheme
// is case-insensitive (RFC 9110 section 11.1).
func bearerToken(h string) (string, error) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errors.New("no bearer token")
	}
	return strings.TrimSpace(token), nil
}
