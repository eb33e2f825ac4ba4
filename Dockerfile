# The drainproxy image: a static binary, the CA bundle (ACME and https upstreams need it),
# a non-root user. No base image: it builds FROM scratch from files prepared beforehand,
# the way release tools do. Build it with scripts/image, which builds the binary
# (CGO_ENABLED=0) and stages this context:
#
#   drainproxy               the binary
#   ca-certificates.crt      the host's CA bundle
#   passwd, group            the "nonroot" user and group, 65532
#   data/                    an empty directory, the ACME storage
#   config.hcl               packaging/container.hcl: listen on all interfaces
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY passwd group /etc/
# ACME accounts and certificates go to $XDG_DATA_HOME/drainproxy/certmagic: mount a
# persistent volume at /data when you use ACME.
COPY --chown=65532:65532 data /data
ENV XDG_DATA_HOME=/data
# Listen on :8080 and the admin on :9901 (all interfaces: a loopback listener inside a
# container cannot be published). A config file, not built-in defaults, so that it is
# visible and replaceable: mount yours over it or give -config; the environment
# (DRAINPROXY_*) and flags still override it.
COPY config.hcl /etc/drainproxy/config.hcl
ENV DRAINPROXY_CONFIG=/etc/drainproxy/config.hcl
COPY drainproxy /drainproxy
# Numeric, so that Kubernetes' runAsNonRoot can verify it. Ports below 1024 (80, 443) need
# the unprivileged-port sysctl; see the README ("The image").
USER 65532:65532
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
# /readyz on the image's admin address (:9901, so 127.0.0.1:9901 too): 200 once the
# upstream answers, 503 before and from the moment a drain begins. A scratch image has no
# curl: the binary probes itself (exit 0 on 2xx, 1 otherwise). Moving the admin elsewhere
# needs a HEALTHCHECK of your own.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/drainproxy", "probe", "-timeout", "2s", "http://127.0.0.1:9901/readyz"]
ENTRYPOINT ["/drainproxy"]
