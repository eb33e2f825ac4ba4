package proxy

import "net/http"

// dropForwardingClaims removes from h, the request to the upstream of a peer outside
// TrustedProxies, every header by which a proxy in front tells the app about the original
// client: its address, scheme, host, port or path. From such a peer they are forgeries
// (X-Forwarded-For, -Host and -Proto are then written by SetXForwarded):
//
//   - every X-Forwarded-* (Port, Prefix, Server, Uri, Method, Ssl, Scheme, Path, ...);
//   - the address headers of other proxies and CDNs: X-Real-IP, True-Client-IP,
//     X-Client-IP, X-Cluster-Client-IP, CF-Connecting-IP, Fastly-Client-IP,
//     X-Original-Forwarded-For, and those that frameworks' "client IP" helpers read
//     (Client-IP, Proxy-Client-IP, WL-Proxy-Client-IP, X-Originating-IP, X-Remote-IP,
//     X-Remote-Addr, X-ProxyUser-Ip, X-Forwarded, Forwarded-For,
//     X-Envoy-External-Address);
//   - host overrides: X-Host, X-HTTP-Host-Override;
//   - path overrides that frameworks honour (Symfony, IIS, auth subrequests):
//     X-Original-URL, X-Rewrite-URL, X-Original-URI; and X-Original-Host;
//   - scheme hints: Front-End-Https, X-Url-Scheme.
//
// Names compare as the app sees them: in any case, and with '_' for '-', since CGI, WSGI,
// Rack and PHP all turn both X-Real-IP and X_Real_IP into HTTP_X_REAL_IP.
func dropForwardingClaims(h http.Header) {
	for k := range h {
		if forwardingClaim(k) {
			delete(h, k)
		}
	}
}

// forwardingClaim reports whether the header name is one dropForwardingClaims removes.
func forwardingClaim(name string) bool {
	if len(name) < len("x-host") { // the shortest below
		return false
	}
	switch name[0] | 0x20 { // the first letter of every name below, in lower case
	case 'x', 't', 'c', 'f', 'p', 'w':
	default:
		return false
	}
	const prefix = "x-forwarded-"
	var buf [32]byte // longer than any name below
	n := min(len(name), len(buf))
	for i := range n {
		c := name[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '_':
			c = '-'
		}
		buf[i] = c
	}
	low := buf[:n]
	if len(low) >= len(prefix) && string(low[:len(prefix)]) == prefix {
		return true
	}
	if len(name) > len(buf) {
		return false
	}
	switch string(low) {
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
