# The image's configuration (/etc/drainproxy/config.hcl, found through
# DRAINPROXY_CONFIG): only what differs from the binary's defaults in a container.
# Everything else, the upstream first, comes from flags or the environment:
#
#   docker run -p 127.0.0.1:8080:8080 drainproxy:latest -upstream http://HOST:PORT
#   docker run -e DRAINPROXY_UPSTREAM_URL=http://HOST:PORT ... drainproxy:latest
#
# Your own file replaces this one: mount it over /etc/drainproxy/config.hcl, or give
# -config. config.hcl in the repository documents every setting.

# All interfaces: inside a container's network namespace "localhost" is the container
# itself, so a loopback listener is out of reach of docker run -p and of Services.
listener {
  address = ":8080"
}

# All interfaces too, for the same reason: kubelet calls httpGet probes on the pod IP, and
# the image's HEALTHCHECK probes 127.0.0.1:9901. This exposes nothing by itself: without a
# token, clients from elsewhere get only the probes (/healthz, /readyz, /drained), while
# /metrics, /status and POST /drain answer loopback (this container, this pod) only; and
# the port leaves the container only where you publish it (-p, a Service). To scrape
# /metrics from elsewhere, set admin { token_file = ... }.
admin {
  address = ":9901"
}
