// Package standin is a small HTTP app to put behind drainproxy: the README's demo, the
// end-to-end tests and the benchmarks use it as the upstream. It is an ordinary app that
// knows nothing of graceful shutdown.
package standin

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/net/websocket"
)

// Hello is the body of GET /: 13 bytes, the size the benchmarks are quoted for.
const Hello = "Hello, world\n"

// Handler serves:
//
//	GET  /              "Hello, world\n"
//	GET  /slow?d=2s     the same after sleeping d (ends early if the client leaves)
//	GET  /stream?n=5&every=200ms  n lines, one flushed every interval (chunked)
//	POST /echo          the request body back, with X-Echo-Bytes
//	GET  /headers       the request as JSON: method, host, path, headers, remote address
//	GET  /status?code=503  an empty answer with that status
//	GET  /ws            WebSocket echo
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, Hello)
	})
	mux.HandleFunc("GET /slow", slow)
	mux.HandleFunc("GET /stream", stream)
	mux.HandleFunc("POST /echo", echo)
	mux.HandleFunc("GET /headers", headers)
	mux.HandleFunc("GET /status", status)
	mux.Handle("GET /ws", websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	return mux
}

func durationParam(r *http.Request, name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(r.URL.Query().Get(name)); err == nil {
		return d
	}
	return def
}

func slow(w http.ResponseWriter, r *http.Request) {
	t := time.NewTimer(durationParam(r, "d", time.Second))
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, Hello)
}

func stream(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n <= 0 {
		n = 5
	}
	every := durationParam(r, "every", 200*time.Millisecond)
	w.Header().Set("Content-Type", "text/plain")
	rc := http.NewResponseController(w)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(w, "line %d\n", i)
		if rc.Flush() != nil {
			return
		}
		if i == n {
			break
		}
		select {
		case <-time.After(every):
		case <-r.Context().Done():
			return
		}
	}
}

func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Echo-Bytes", strconv.Itoa(len(body)))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(body)
}

// Request is what /headers answers.
type Request struct {
	Method     string      `json:"method"`
	Host       string      `json:"host"`
	Path       string      `json:"path"`
	RemoteAddr string      `json:"remote_addr"`
	Header     http.Header `json:"header"`
}

func headers(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(Request{r.Method, r.Host, r.URL.RequestURI(), r.RemoteAddr, r.Header})
}

func status(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.URL.Query().Get("code"))
	if err != nil || code < 200 || code > 599 {
		code = http.StatusOK
	}
	w.WriteHeader(code)
}
