package proxy

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// refusedTarget says whether r's request target is one a reverse proxy must not forward as
// it is: the status to answer and why (status 0: forward it). Each would otherwise reach
// the app rewritten into something the client did not ask for.
//
//   - CONNECT asks for a tunnel to the host it names: a forward proxy's job, never an app's.
//     405, as nginx answers (without Allow: the app's methods are the app's business).
//   - "*" is the target of OPTIONS alone (RFC 9112, 3.2.4); GET * would reach the app as
//     GET /%2A. 400.
//   - A #fragment is for the client alone (RFC 9110, 4.2.5) and may not be sent
//     (RFC 9112, 3.2); Go keeps it in the path, where it would reach the app as %23. 400,
//     as Envoy and HAProxy answer.
func refusedTarget(r *http.Request) (status int, why string) {
	switch {
	case r.Method == http.MethodConnect:
		return http.StatusMethodNotAllowed, "CONNECT is not proxied: this is a reverse proxy, not a forward proxy"
	case r.URL.Path == "*" && r.Method != http.MethodOptions:
		return http.StatusBadRequest, "the request target * is only allowed with OPTIONS"
	case r.URL.Fragment != "" || strings.Contains(r.RequestURI, "#") || strings.Contains(r.URL.Path, "#"):
		return http.StatusBadRequest, "the request target carries a #fragment, which clients must not send"
	}
	return 0, ""
}

// refuse answers a request that refusedTarget turned down, without bothering the
// upstream, and closes an HTTP/1 connection after it, as nginx does: a client that sent
// CONNECT may be about to send a tunnel's bytes.
func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, status int, why string) {
	if rec := recorderOf(w); rec != nil {
		rec.RecordUpstreamError(ReasonBadRequest, status, errors.New(why))
	}
	p.log.Debug("request target refused", "status", status, "why", why,
		"method", r.Method, "target", r.RequestURI, "client", r.RemoteAddr)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if r.ProtoMajor == 1 {
		h.Set("Connection", "close")
	}
	w.WriteHeader(status)
	io.WriteString(w, strconv.Itoa(status)+" "+http.StatusText(status)+": "+why+"\n")
}
