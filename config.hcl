# drainproxy configuration: every setting, with its default written out.
# Use it with: drainproxy -config config.hcl   (flags given as well override this file)
# Check it with: drainproxy -config config.hcl -check
# Durations are strings such as "500ms", "5s", "1m30s".

# Where clients connect. Repeat the block for several addresses; -listen replaces them all.
listener {
  # Loopback by default, so that nothing is exposed until you choose to; ":8080" is all interfaces.
  address = "127.0.0.1:8080"
  # Plain-HTTP listeners only: answer every request with a redirect to HTTPS (ACME challenge paths excepted). Needs a listener with a tls block.
  redirect_https = false
  # Plain-HTTP listeners only: accept HTTP/2 with prior knowledge (h2c, what gRPC clients speak without TLS) beside HTTP/1.1.
  h2c = true
}

# HTTPS: a listener with a tls block. Shown commented out, since there is none by default;
# the values written are the defaults. Public ACME CAs validate on ports 80 (HTTP-01, answered
# by a plain listener) and 443 (TLS-ALPN-01, answered by the HTTPS listener itself).
#
# listener {
#   address = ":80"
#   redirect_https = true
#   # 308 keeps the method and body (POST stays POST); 301, 302 and 307 are allowed too.
#   redirect_status = 308
#   # The port written in the redirect; 0 is the first HTTPS listener's port (443 is left out of the URL). Set 443 when a NAT maps 443 to 8443.
#   redirect_port = 0
# }
# listener {
#   address = ":443"
#   tls {
#     # Oldest TLS version accepted: "1.2" or "1.3"; older ones are insecure. HTTP/2 and HTTP/1.1 are offered by ALPN.
#     min_version = "1.2"
#     # Strict-Transport-Security sent on every HTTPS response, e.g. "max-age=31536000"; "" sends none. Browsers remember it: start short.
#     hsts = ""
#     # Either certificate files (PEM; the chain first in cert_file), read at start-up and again on SIGHUP ...
#     cert_file = "/etc/drainproxy/tls/fullchain.pem"
#     # The private key of cert_file (PEM), read with it.
#     key_file  = "/etc/drainproxy/tls/privkey.pem"
#     # ... or automatic certificates from an ACME CA (certmagic); not both.
#     acme {
#       # Names to obtain a certificate for; each must resolve to this host. Wildcards need DNS-01, which is not supported.
#       domains = ["example.com", "www.example.com"]
#       # The account's contact, for the CA's expiry and incident mail; "" registers without one.
#       email = ""
#       # The CA's ACME directory: Let's Encrypt's production one by default.
#       ca = "https://acme-v02.api.letsencrypt.org/directory"
#       # true uses Let's Encrypt's staging CA (untrusted certificates, generous rate limits): try a new setup there first.
#       staging = false
#       # Extra PEM root files to trust when talking to the CA, for a private ACME CA; the system roots are trusted too.
#       trusted_roots = []
#       # Accounts, keys, certificates and locks. Replicas that share it (a shared volume) obtain each certificate once.
#       # "" is /var/lib/drainproxy/certmagic for root, else $XDG_DATA_HOME/drainproxy/certmagic or ~/.local/share/drainproxy/certmagic.
#       storage = ""
#       # Must be true: you have read and accept the CA's terms of service (https://letsencrypt.org/repository/).
#       agree_terms = false
#       # Challenge types allowed: "http-01" on the plain listener (port 80), "tls-alpn-01" on this one (port 443).
#       challenges = ["http-01", "tls-alpn-01"]
#     }
#   }
# }

# The app behind the proxy. Only url is required (or -upstream on the command line).
upstream {
  # http://host:port, https://host (h2 by ALPN when the app offers it) or unix:///path/to.sock;
  # h2c://host:port or unix+h2c:///path/to.sock speak HTTP/2 in clear text to the app (gRPC servers).
  url = "http://127.0.0.1:3000"
  # The app to start and supervise (or give it after --), e.g. ["./app", "--port", "{port}"]; it gets PORT and {port} from url. Empty when the app runs on its own.
  command = []
  # Connecting to an app on the same host or pod is fast; a longer wait means it is not there.
  dial_timeout = "5s"
  # An app that has not started answering by then is stuck; the client gets a 504.
  response_header_timeout = "60s"
  # Idle keep-alive connections kept to the app. Size it to the concurrency you expect: past it, a busy proxy
  # closes and reopens connections (Go's default of 2 would do so constantly). An idle one holds no buffers here.
  idle_conns = 1024
  # Unused pooled connections are closed after this, before the app's own idle timeout closes them under us.
  idle_conn_timeout = "90s"
  # Longest the app may go without sending a byte of a response body once its headers came (nginx's proxy_read_timeout):
  # the client's connection is then closed and the access log says read_timeout. A stream that sends something more
  # often (SSE heartbeats) runs for as long as it likes. Before the headers, response_header_timeout applies. 0 is none.
  read_timeout = "60s"
  # Longest the app may go without taking a byte of a request, e.g. an upload it stopped reading (nginx's
  # proxy_send_timeout); the client gets a 504. 0 is none.
  send_timeout = "60s"
  # A longer response head (status line and headers, 1xx included) answers 502 with one log line: it bounds the memory one
  # bad response can take. More than Envoy's 60 KiB and nginx's 8 KiB buffer; at least 1024.
  max_response_header_bytes = 65536
  # Requests in flight to the app, every client and protocol together (Envoy's circuit breaker, same default): one HTTP/2
  # peer cannot multiply streams into thousands of upstream connections. Past it a request waits up to queue_timeout for a
  # slot (a connection holding few slots goes first), then gets 503 with Retry-After (gRPC: UNAVAILABLE). As many may
  # wait as the cap; past that the request (or a waiter of a connection with more waiting) is refused at once. At least 1.
  max_requests = 1024
  # How long a request past max_requests waits for a slot before its 503.
  queue_timeout = "1s"
  # Reuse connections to the app. An app that sends a response nobody asked for (a second one, a body after a 204 or
  # on a HEAD) is quarantined for 30s when drainproxy sees it (no reuse; drainproxy_upstream_protocol_errors_total),
  # but an exchange already in flight can get the stray. false: one connection per exchange, never a wrong answer.
  keepalive = true
}

proxy {
  # "client" passes the client's Host on (virtual hosts keep working); "upstream" sends the url's host.
  host_header = "client"
  # Peers whose Forwarded, X-Forwarded-*, X-Real-IP and similar headers are believed (CIDR or bare IP); from anyone else they are removed or replaced. Empty trusts nobody.
  trusted_proxies = []
}

drain {
  # Keep serving this long after SIGTERM while /readyz says 503; use about "5s" on Kubernetes so the pod leaves the endpoints first. "auto" ends the delay once no new connection has arrived for quiet (safe when new connections come much more often than quiet; with sparse traffic use a fixed delay).
  delay = "0s"
  # Keep /readyz at 200 this long after SIGTERM (at most delay) while responses already say "Connection: close": for externalTrafficPolicy: Local, where kube-proxy keeps a node's last terminating endpoint only while it is ready (KEP-1669).
  readiness_fail_delay = "0s"
  # With delay = "auto": the delay ends once no new connection has arrived for this long.
  quiet = "1s"
  # With delay = "auto": never end the delay sooner than this after the signal.
  delay_min = "0s"
  # With delay = "auto": end the delay this long after the signal even if new connections keep arriving.
  delay_max = "10s"
  # How long in-flight requests may take after the listeners close; keep it below the orchestrator's kill timeout.
  grace = "30s"
  # During a drain, a keep-alive connection idle this long (plus a margin of its round trip and retransmission timeout, 3 s if its handshake was retransmitted; counted from the latest of its last response, the client's acknowledgement of it, and the signal) is closed; a client idle longer that sends just as we close can lose that request.
  idle_close = "1s"
  # Once new connections are refused, keep the listeners open this long at most for handshakes under way (a far client's request is one round trip behind); "0s" resets them at close.
  handshake_wait = "2s"
  # Bound on waiting for the access log and other background workers to flush at exit.
  flush_timeout = "5s"
  # While the drain waits, log what is left (counts, the oldest requests, time to the deadline) this often; "0s" never.
  progress_interval = "5s"
  # Write the drain's summary line to this file at exit, so "kubectl describe pod" shows how the last drain ended; "auto" is /dev/termination-log where it exists, "" none.
  termination_log = "auto"
}

admin {
  # /healthz, /readyz, /metrics, /status and POST /drain; loopback so they are never public. "off" disables them.
  address = "127.0.0.1:9901"
  # Bearer token required by POST /drain, POST /restart, /metrics and /status (not by the probes /healthz, /readyz and the hook /drained); "" is none. Without one on an address beyond loopback, those answer loopback clients only.
  token = ""
  # Or read the token from this file (e.g. a mounted secret), so it is not in the config; "" is none. Use token or token_file, not both.
  token_file = ""
  # Host names (no port) the admin endpoints answer to besides loopback names and the address a request came in on; any other Host is 403, which stops DNS rebinding. Probes (/healthz, /readyz) answer any Host.
  allowed_hosts = []
}

# How drainproxy runs the app it starts (upstream.command or the args after --); ignored without one.
# The app runs in its own process group, so Ctrl-C reaches drainproxy only: it drains first, then stops the app.
app {
  # Sent to the app's process group once the proxy has drained; most apps stop on SIGTERM, some (nginx) want "SIGQUIT".
  stop_signal = "SIGTERM"
  # Then SIGKILL to the group, and exit 1; keep drain.grace plus this below the orchestrator's kill timeout.
  stop_timeout = "10s"
  # The app must answer (see health_check) by then, else drainproxy stops it and exits 1 naming the address it waited on.
  start_timeout = "30s"
  # When the app exits by itself: "never" drains and exits with its code; "on-failure" restarts it after a non-zero exit; "always" after any exit. Requests get 503 + Retry-After meanwhile.
  restart = "never"
  # Restarts allowed within restart_window (waiting 100ms, doubling up to 10s, between them); one more exit and drainproxy drains and exits 1.
  max_restarts = 5
  # The window max_restarts counts in: a restart older than this no longer counts.
  restart_window = "1m"
  # Written before each line of the app's stdout and stderr, e.g. "app | "; "" passes its output through byte for byte.
  output_prefix = ""
  # Signals passed on to the app's process, e.g. ["SIGUSR2"]: SIGUSR1 (drainproxy's own log reopening sees it too), SIGUSR2, SIGQUIT, SIGWINCH, SIGTTIN, SIGTTOU.
  forward_signals = []
}

# How the upstream is checked. /readyz says 503 until it first answers and while it fails; proxied requests that cannot reach it count as failed checks too.
health_check {
  # GET this path on the upstream and expect 200-399, e.g. "/healthz"; "" only checks that it accepts a connection.
  path = ""
  # Time between checks; until the upstream first answers it is checked every 100ms, so start-up is not slowed.
  interval = "5s"
  # A check without an answer by then has failed.
  timeout = "2s"
  # Passed checks in a row that make an unhealthy upstream healthy again, so it does not flap.
  healthy_threshold = 2
  # Failures in a row (checks and proxied requests) that make a healthy upstream unhealthy; one blip is not an outage.
  unhealthy_threshold = 3
  # true: the gRPC health protocol instead, grpc.health.v1.Health/Check over HTTP/2 (h2c; h2 for https), passing on SERVING. path must be "".
  grpc = false
  # The service asked about with grpc = true; "" is the whole server.
  service = ""
}

log {
  # trace, debug, info, warn or error; info logs each drain step without per-request noise.
  level = "info"
  # auto is text on a terminal and json otherwise (for log collectors); or force "text" or "json".
  format = "auto"
  # The access log is its own stream: "stdout", "stderr", "off", or a file path (appended to; SIGUSR1 reopens it for logrotate).
  access_log = "stdout"
  # "json" has every field (request id, duration, upstream, upstream error); "common" and "combined" are Apache's and nginx's formats.
  access_log_format = "json"
  # Lines that may wait for the writer; the requests never write to the log themselves.
  access_log_buffer = 4096
  # When the buffer is full: "block" makes requests wait for room (no line is lost), "drop" drops lines and counts them.
  access_log_when_full = "block"
}

limits {
  # Concurrent client connections per listener; 0 is unlimited. When full, a new client takes the place of the keep-alive
  # connection idle longest (closed, as nginx does); one with a request in progress is never closed, and without an idle one
  # new clients wait in the kernel backlog.
  max_connections = 10000
  # Largest request header list accepted, else 431: the bytes of an HTTP/1 head, the decoded list of HTTP/2 (32 bytes per
  # field counted, as RFC 9113 does). Bounds HPACK amplification: a 4,000-byte header indexed once and referenced 250
  # times is ~250 bytes on the wire and ~1 MB decoded. Near Envoy's 60 KiB and above nginx's 32 KiB; 0 is Go's 1 MiB.
  max_header_bytes = 65536
  # Largest request body accepted, else 413; 0 is unlimited, leaving the limit to the app.
  max_request_body_bytes = 0
  # Time to read request headers; bounds slow-loris clients that trickle them in.
  read_header_timeout = "10s"
  # Deadline for reading a whole request, head and body, from its first byte (a deadline, not a progress timeout: see
  # client_body_timeout); 0 is none, so long uploads work. Its old name, limits.read_timeout, still loads, with a warning.
  request_read_timeout = "0s"
  # Time to write a whole response; 0 is none, so long proxied and streamed responses work.
  write_timeout = "0s"
  # How long a keep-alive client connection may wait for its next request.
  idle_timeout = "120s"
  # Longest a client may go without taking a byte of its response (nginx's send_timeout): a client that stops reading
  # has its connection closed, and the access log says send_timeout. A download that keeps moving is never cut. 0 is none.
  send_timeout = "60s"
  # Longest a client may go without sending a byte of its request body (nginx's client_body_timeout): 408, and the
  # connection is closed. An upload that keeps moving is never cut. 0 is none.
  client_body_timeout = "60s"
  # An upgraded connection (WebSocket) on which nothing moved either way for this long is closed (HAProxy's timeout
  # tunnel). Longer than the others: an open but quiet WebSocket is normal. Pings count as traffic. 0 is none.
  upgrade_idle_timeout = "1h"
  # HTTP/2 streams one client connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused. 100
  # is what most servers announce; each stream may hold an upstream request.
  h2_max_concurrent_streams = 100
  # An HTTP/2 stream whose client gives its response no send window for this long is reset (a client that sets
  # SETTINGS_INITIAL_WINDOW_SIZE=0 would otherwise hold an upstream request for the whole send_timeout). 0 is none.
  h2_window_timeout = "10s"
}

runtime {
  # Under load (16 MB/s of allocation or more) the heap may grow to this many bytes before Go's garbage collector
  # runs, however little is alive: far fewer collections, for memory near this size. Never above half of the memory limit (GOMEMLIMIT, or 90% of the container's). 0 leaves Go's own pacing; GOGC in the environment wins. Its old name, limits.gc_heap_floor_bytes, still loads, with a warning.
  gc_heap_floor_bytes = 33554432
}

server {
  # The HTTP/1 server loop of the public listeners: "h1serve", drainproxy's own (no read or write buffer held while a
  # keep-alive connection is idle, no background read on every request; h1serve/oracle_test.go lists where it differs
  # from Go's and why), or "net/http", Go's http.Server. Both serve the same proxy, hand HTTP/2 to the same server and
  # drain the same way; CI runs every test on both. docs/performance.md has what each costs.
  engine = "h1serve"
}
