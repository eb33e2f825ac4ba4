package proxy_test

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/standin"
)

func TestForwardingClaimsFromUntrustedPeersRemoved(t *testing.T) {
	up := upstreamURL(t, standin.Handler())
	// Every claim a proxy in front makes about the original client, as a client might
	// forge it: some in other spellings that CGI, WSGI and PHP read as the same variable.
	claims := map[string]string{
		"X-Real-Ip":                "203.0.113.7",
		"True-Client-Ip":           "203.0.113.7",
		"X-Client-Ip":              "203.0.113.7",
		"X-Cluster-Client-Ip":      "203.0.113.7",
		"Cf-Connecting-Ip":         "203.0.113.7",
		"Fastly-Client-Ip":         "203.0.113.7",
		"X-Original-Forwarded-For": "203.0.113.7",
		"X-Forwarded-Port":         "443",
		"X-Forwarded-Prefix":       "/admin",
		"X-Forwarded-Server":       "forged.example",
		"X-Forwarded-Uri":          "/admin",
		"X-Forwarded-Ssl":          "on",
		"X-Original-Url":           "/admin",
		"X-Rewrite-Url":            "/admin",
		"X-Original-Uri":           "/admin",
		"X-Original-Host":          "forged.example",
		"Front-End-Https":          "on",
		"X-Url-Scheme":             "https",
		"Client-Ip":                "203.0.113.7", // issue 23, item 7: the names frameworks read too
		"Proxy-Client-Ip":          "203.0.113.7",
		"Wl-Proxy-Client-Ip":       "203.0.113.7",
		"X-Originating-Ip":         "203.0.113.7",
		"X-Remote-Ip":              "203.0.113.7",
		"X-Remote-Addr":            "203.0.113.7",
		"X-Proxyuser-Ip":           "203.0.113.7",
		"X-Forwarded":              "for=203.0.113.7",
		"Forwarded-For":            "203.0.113.7",
		"X-Envoy-External-Address": "203.0.113.7",
		"X-Host":                   "forged.example",
		"X-Http-Host-Override":     "forged.example",
		"X_real_ip":                "203.0.113.8", // HTTP_X_REAL_IP to a CGI app
		"X_forwarded_for":          "203.0.113.8", // HTTP_X_FORWARDED_FOR
		"X-Forwarded_host":         "forged.example",
	}
	innocent := map[string]string{"X-Custom": "kept", "Cf-Ray": "kept", "X-Forwardedness": "kept"}
	send := func(t *testing.T, f *front) http.Header {
		req, _ := http.NewRequest("GET", f.URL+"/headers", nil)
		req.Host = "app.example"
		for k, v := range claims {
			req.Header[k] = []string{v} // as spelled: Header.Set would canonicalize
		}
		for k, v := range innocent {
			req.Header[k] = []string{v}
		}
		return f.headersSeen(t, req).Header
	}

	t.Run("untrusted peer", func(t *testing.T) {
		f := startFront(t, proxy.Options{Upstream: up}, false)
		h := send(t, f)
		for k := range claims {
			if v, ok := h[http.CanonicalHeaderKey(k)]; ok {
				t.Errorf("%s: %q reached the app from an untrusted peer", k, v)
			}
		}
		for k, v := range innocent {
			if got := h.Get(k); got != v {
				t.Errorf("%s: %q reached the app, want %q: not a forwarding header", k, got, v)
			}
		}
		// Ours replace the forged ones.
		if got := h["X-Forwarded-For"]; !equalStrings(got, []string{"127.0.0.1"}) {
			t.Errorf("X-Forwarded-For %q, want only the peer's address", got)
		}
		if got := h.Get("X-Forwarded-Host"); got != "app.example" {
			t.Errorf("X-Forwarded-Host %q, want the Host the client sent", got)
		}
	})

	t.Run("trusted peer", func(t *testing.T) {
		f := startFront(t, proxy.Options{Upstream: up,
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, false)
		h := send(t, f)
		for k, v := range claims {
			if got := h[http.CanonicalHeaderKey(k)]; !equalStrings(got, []string{v}) {
				t.Errorf("%s: %q reached the app, want %q kept from a trusted proxy", k, got, v)
			}
		}
	})
}
