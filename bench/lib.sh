# bench/lib.sh: what bench/run and bench/rate share: starting and stopping the targets
# (the stand-in app, drainproxy, nginx, Caddy, go-tcp, rp-plain) on loopback and reading their CPU and
# peak RSS from /proc. Sourced, not run. The caller sets: prog (its name, for messages), work
# (a temporary directory), port_up, port_proxy, port_admin, dp_bin, dp_env, alt_bin, alt_env
# and, for go-tcp, builds $work/gotcp.

# alive PID: the process exists and is not a zombie.
alive() {
	local st
	st=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
	[[ -n $st && $st != Z ]]
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http_ok PORT: GET / on 127.0.0.1:PORT answers 200.
http_ok() (
	exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
	printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
	IFS= read -r -t 2 line <&3 || true
	[[ $line == "HTTP/1."?" 200"* ]]
)

# https_ok PORT: GET https://127.0.0.1:PORT/ answers 200 (the certificate is not checked).
https_ok() {
	[[ $(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "https://127.0.0.1:$1/") == 200 ]]
}

# wait_ok PORT PID [https]: until GET / answers 200 (at most 10 s), or the process died.
wait_ok() {
	local i check=http_ok
	[[ ${3:-} != https ]] || check=https_ok
	for ((i = 0; i < 200; i++)); do
		if $check "$1" 2>/dev/null; then return 0; fi
		alive "$2" || return 1
		sleep 0.05
	done
	return 1
}

# start_standin: starts the stand-in app on port_up; sets standin_pid.
start_standin() {
	"$work/standin" -listen "127.0.0.1:$port_up" 2>"$work/standin.log" &
	standin_pid=$!
	wait_ok "$port_up" "$standin_pid" || { echo "$prog: the stand-in app did not start" >&2; cat "$work/standin.log" >&2; exit 1; }
}

# write_cert: a self-signed ECDSA P-256 certificate for 127.0.0.1 and localhost, in
# $work/tls/cert.pem and key.pem: the one certificate every TLS target serves.
write_cert() {
	mkdir -p "$work/tls"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" -subj /CN=localhost \
		-addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
}

# write_nginx_conf ACCESS_LOG_LINE [tls]: nginx.conf; with tls, the listener is HTTPS (TLS
# 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN) with write_cert's certificate.
write_nginx_conf() {
	local listen="listen 127.0.0.1:$port_proxy reuseport;" tls=""
	if [[ ${2:-} == tls ]]; then
		listen="listen 127.0.0.1:$port_proxy ssl http2 reuseport;"
		# keepalive_requests: nginx closes a connection after 1000 requests by default
		# (HTTP/2 streams included), which the load tools would see as errors.
		tls="ssl_certificate $work/tls/cert.pem; ssl_certificate_key $work/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3; keepalive_requests 1000000;"
	fi
	cat >"$work/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 8192; }
http {
    $1
    client_body_temp_path $work/nginx-body;
    proxy_temp_path $work/nginx-proxy;
    upstream app {
        server 127.0.0.1:$port_up;
        keepalive 256;
    }
    server {
        $listen
        $tls
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

# write_caddyfile: Caddyfile (plain HTTP) and Caddyfile-tls (HTTPS with write_cert's
# certificate; HTTP/2 and HTTP/1.1 by ALPN, Caddy's defaults).
write_caddyfile() {
	cat >"$work/Caddyfile-tls" <<EOF
{
	admin off
	auto_https off
}
https://127.0.0.1:$port_proxy {
	tls $work/tls/cert.pem $work/tls/key.pem
	reverse_proxy 127.0.0.1:$port_up
}
EOF
cat >"$work/Caddyfile" <<EOF
{
	admin off
	auto_https off
}
http://127.0.0.1:$port_proxy {
	reverse_proxy 127.0.0.1:$port_up
}
EOF
}

# start_target TARGET: starts it (drainproxy-tls, nginx-tls and caddy-tls need write_cert); sets proxy_pid (empty for direct), measured_pid (the
# process whose CPU and RSS are measured: the proxy, or the stand-in for direct) and url.
start_target() {
	proxy_pid=""
	url="http://127.0.0.1:$port_proxy/"
	local dp_args=(-listen "127.0.0.1:$port_proxy" -upstream "http://127.0.0.1:$port_up")
	local bin=$dp_bin envs=$dp_env scheme=http
	case $1 in
	direct)
		url="http://127.0.0.1:$port_up/"
		# The stand-in runs for the whole benchmark: reset its peak RSS to the current one
		# (Linux's clear_refs 5), or its peak would be that of all runs so far.
		measured_pid=""
		echo 5 2>/dev/null >"/proc/$standin_pid/clear_refs" && measured_pid=$standin_pid
		return 0
		;;
	go-tcp)
		"$work/gotcp" -listen "127.0.0.1:$port_proxy" -upstream "127.0.0.1:$port_up" 2>"$work/gotcp.log" &
		proxy_pid=$!
		;;
	rp-plain)
		"$work/rpplain" -listen "127.0.0.1:$port_proxy" -upstream "http://127.0.0.1:$port_up" 2>"$work/rpplain.log" &
		proxy_pid=$!
		;;
	rp-h1serve)
		"$work/rpplain" -server h1serve -listen "127.0.0.1:$port_proxy" -upstream "http://127.0.0.1:$port_up" 2>"$work/rpplain.log" &
		proxy_pid=$!
		;;
	drainproxy) dp_args+=(-admin "127.0.0.1:$port_admin" -access-log "$work/access.log") ;;
	alt)
		dp_args+=(-admin "127.0.0.1:$port_admin" -access-log "$work/access.log")
		bin=$alt_bin envs=$alt_env
		;;
	dp-nolog) dp_args+=(-admin "127.0.0.1:$port_admin" -access-log off) ;;
	dp-noadmin) dp_args+=(-admin off -access-log "$work/access.log") ;;
	dp-bare) dp_args+=(-admin off -access-log off) ;;
	drainproxy-tls)
		# The listener with its tls block comes from a file; -listen would replace it.
		cat >"$work/dp-tls.hcl" <<EOF
listener {
  address = "127.0.0.1:$port_proxy"
  tls {
    cert_file = "$work/tls/cert.pem"
    key_file  = "$work/tls/key.pem"
  }
}
EOF
		dp_args=(-config "$work/dp-tls.hcl" -upstream "http://127.0.0.1:$port_up"
			-admin "127.0.0.1:$port_admin" -access-log "$work/access.log")
		url="https://127.0.0.1:$port_proxy/" scheme=https
		;;
	nginx | nginx-log | nginx-tls)
		case $1 in
		nginx) write_nginx_conf "access_log off;" ;;
		nginx-log) write_nginx_conf "access_log $work/nginx-access.log combined;" ;;
		nginx-tls)
			write_nginx_conf "access_log off;" tls
			url="https://127.0.0.1:$port_proxy/" scheme=https
			;;
		esac
		nginx -p "$work" -c "$work/nginx.conf" -e "$work/nginx-error.log" 2>>"$work/nginx-error.log" &
		proxy_pid=$!
		;;
	caddy | caddy-tls)
		local caddyfile=$work/Caddyfile
		if [[ $1 == caddy-tls ]]; then
			caddyfile=$work/Caddyfile-tls url="https://127.0.0.1:$port_proxy/" scheme=https
		fi
		XDG_DATA_HOME=$work/caddy-data XDG_CONFIG_HOME=$work/caddy-config HOME=$work \
			caddy run --config "$caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
		proxy_pid=$!
		;;
	esac
	if [[ -z $proxy_pid ]]; then
		# shellcheck disable=SC2086 # envs is a list of VAR=value words
		env $envs "$bin" "${dp_args[@]}" -log-format json 2>"$work/drainproxy.log" &
		proxy_pid=$!
	fi
	if ! wait_ok "$port_proxy" "$proxy_pid" "$scheme"; then
		echo "$prog: $1 did not start; its log:" >&2
		cat "$work"/*.log >&2 || true
		exit 1
	fi
	measured_pid=$proxy_pid
}

# peak_rss_kb PID: VmHWM of PID and its child processes (nginx's workers), summed, in KiB.
peak_rss_kb() {
	local sum=0 p hwm
	for p in "$1" $(pgrep -P "$1" || true); do
		hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
		sum=$((sum + ${hwm:-0}))
	done
	echo "$sum"
}

# cpu_ticks PID: user + system CPU time of PID and its child processes, in clock ticks.
cpu_ticks() {
	local sum=0 p t
	for p in "$1" $(pgrep -P "$1" || true); do
		# Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the name.
		t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || true)
		sum=$((sum + ${t:-0}))
	done
	echo "$sum"
}

stop_target() {
	[[ -n $proxy_pid ]] || return 0
	local pid=$proxy_pid
	proxy_pid=""
	kill -TERM "$pid" 2>/dev/null || true
	local i
	for ((i = 0; i < 100; i++)); do
		alive "$pid" || break
		sleep 0.05
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	# nginx's workers outlive a killed master only briefly; wait for the port to be free.
	for ((i = 0; i < 100; i++)); do
		port_free "$port_proxy" && break
		sleep 0.05
	done
	rm -f "$work/access.log" "$work/nginx-access.log"
}
