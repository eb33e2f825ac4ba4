package proxy

import (
	"strings"
	"testing"
)

// claimsByHand is forwardingClaim's list, matched the slow and obvious way.
func claimsByHand(name string) bool {
	n := strings.ReplaceAll(strings.ToLower(name), "_", "-")
	if strings.HasPrefix(n, "x-forwarded-") {
		return true
	}
	switch n {
	case "x-real-ip", "true-client-ip", "x-client-ip", "x-cluster-client-ip",
		"cf-connecting-ip", "fastly-client-ip", "x-original-forwarded-for",
		"x-original-url", "x-rewrite-url", "x-original-uri", "x-original-host",
		"front-end-https", "x-url-scheme",
		"client-ip", "proxy-client-ip", "wl-proxy-client-ip", "x-originating-ip", "x-remote-ip",
		"x-remote-addr", "x-proxyuser-ip", "x-forwarded", "forwarded-for", "x-envoy-external-address",
		"x-host", "x-http-host-override":
		return true
	}
	return false
}

func FuzzForwardingClaim(f *testing.F) {
	for _, s := range []string{"X-Real-Ip", "X_REAL_IP", "x-forwarded-", "X-Forwarded-Tls-Client-Cert-Info-And-More",
		"X-Forwarded", "Forwarded", "Cf-Ray", "X-Hosts", "Wl-Proxy-Client-Ip", "P", "X-Hos", "X-Url-Schemes", "x-original-forwarded-for", "", "X", "\xff-forwarded-x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := forwardingClaim(name), claimsByHand(name); got != want {
			t.Errorf("forwardingClaim(%q) = %v, want %v", name, got, want)
		}
	})
}

func BenchmarkDropForwardingClaims(b *testing.B) {
	h := map[string][]string{"User-Agent": {"wrk"}, "Accept": {"*/*"}, "Accept-Encoding": {"gzip"},
		"Cookie": {"a=1"}, "X-Request-Id": {"0123456789abcdef"}, "Cache-Control": {"no-cache"}}
	b.ReportAllocs()
	for b.Loop() {
		dropForwardingClaims(h)
	}
}
