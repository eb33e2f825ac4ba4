# drainproxy configuration: every setting, with its default written out.
# Use it with: drainproxy -config config.hcl   (flags given as well override this file)
# Check it with: drainproxy -config config.hcl -check
# Durations are strings such as "500ms", "5s", "1m30s".

# Where clients connect. Repeat the block for several addresses; -listen replaces them all.
listener {
  # Loopback by default, so that nothing is exposed until you choose to; ":8080" is all interfaces.
  address = "127.0.0.1:8080"
}

# The app behind the proxy. Only url is required (or -upstream on the command line).
upstream {
  # http://host:port, https://host or unix:///path/to.sock.
  url = "http://127.0.0.1:3000"
  # The app to start and supervise, e.g. ["./app", "--port", "3000"]; empty when the app runs on its own.
  command = []
  # Connecting to an app on the same host or pod is fast; a longer wait means it is not there.
  dial_timeout = "5s"
  # An app that has not started answering by then is stuck; the client gets a 504.
  response_header_timeout = "60s"
  # Keep-alive pool to the app; Go's default of 2 would make a busy proxy reconnect constantly.
  idle_conns = 256
  # Unused pooled connections are closed after this, before the app's own idle timeout closes them under us.
  idle_conn_timeout = "90s"
}

proxy {
  # "client" passes the client's Host on (virtual hosts keep working); "upstream" sends the url's host.
  host_header = "client"
  # Peers whose X-Forwarded-* headers are believed (CIDR or bare IP); empty trusts nobody, so clients cannot spoof them.
  trusted_proxies = []
}

drain {
  # Keep serving this long after SIGTERM while /readyz says 503; use about "5s" on Kubernetes so the pod leaves the endpoints first.
  delay = "0s"
  # How long in-flight requests may take after the listeners close; keep it below the orchestrator's kill timeout.
  grace = "30s"
  # During a drain, a keep-alive connection idle this long is closed; closing sooner races a client's next request.
  idle_close = "500ms"
  # Bound on waiting for the access log and other background workers to flush at exit.
  flush_timeout = "5s"
}

admin {
  # /healthz, /readyz, /metrics and POST /drain; loopback so they are never public. "off" disables them.
  address = "127.0.0.1:9901"
}

log {
  # trace, debug, info, warn or error; info logs each drain step without per-request noise.
  level = "info"
  # auto is text on a terminal and json otherwise (for log collectors); or force "text" or "json".
  format = "auto"
  # The access log is its own stream: "stdout", "stderr", "off", or a file path.
  access_log = "stdout"
}

limits {
  # Concurrent client connections per listener; past it new ones wait in the kernel backlog. 0 is unlimited.
  max_connections = 10000
  # Largest request header block accepted (1 MiB, Go's default).
  max_header_bytes = 1048576
  # Largest request body accepted, else 413; 0 is unlimited, leaving the limit to the app.
  max_request_body_bytes = 0
  # Time to read request headers; bounds slow-loris clients that trickle them in.
  read_header_timeout = "10s"
  # Time to read a whole request; 0 is none, so long uploads work.
  read_timeout = "0s"
  # Time to write a whole response; 0 is none, so long proxied and streamed responses work.
  write_timeout = "0s"
  # How long a keep-alive client connection may wait for its next request.
  idle_timeout = "120s"
}
