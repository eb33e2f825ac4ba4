package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/internal/testlog"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// sendBoth sends a bodiless GET (the inline path) and a POST (the Transport path) to base
// and returns what each got: the status, or 0 when the response was cut short.
func sendBoth(t *testing.T, c *http.Client, base string) (statuses [2]int) {
	t.Helper()
	for i, method := range []string{"GET", "POST"} {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("x")
		}
		req, _ := http.NewRequest(method, base+"/", body)
		resp, err := c.Do(req)
		if err != nil {
			continue
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil {
			statuses[i] = resp.StatusCode
		}
	}
	return statuses
}

// TestStatusOutsideRangeIs502 sends "HTTP/1.1 099 X" on both paths: 502 (not a panic in
// WriteHeader and a bare close), the error recorded for the access log, one log line, and
// the upstream connection closed at once rather than by a finalizer.
func TestStatusOutsideRangeIs502(t *testing.T) {
	up, accepted := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		// A connection the proxy leaks would otherwise keep this goroutine, and the
		// test's cleanup, waiting for good.
		c.SetReadDeadline(time.Now().Add(inlineWait))
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	log := &testlog.Buffer{}
	_, base, errs := inlineFront(t, Options{Upstream: up,
		Logger: hclog.New(&hclog.LoggerOptions{Output: log})})
	c := inlineClient(t)
	fds := openFDs(t)
	if got := sendBoth(t, c, base); got != [2]int{502, 502} {
		t.Errorf("GET, POST answered %v, want 502 both", got)
	}
	expectErr(t, errs, "other 502")
	expectErr(t, errs, "other 502")
	if n := strings.Count(log.String(), "status code 099, outside 100-999"); n != 2 {
		t.Errorf("%d log lines name the status, want 2:\n%s", n, log)
	}
	c.CloseIdleConnections()
	eventually(t, "no file descriptor left open", func() bool { return openFDs(t) <= fds })
	if n := accepted.Load(); n < 2 {
		t.Errorf("%d upstream connections, want 2 or more", n)
	}
}

// TestPanicIsRecovered makes the request path panic before and after the response head
// went out, on both paths: a 502 before, a cut connection after, an error line either way,
// and no file descriptor left open.
func TestPanicIsRecovered(t *testing.T) {
	up, cc := inlineUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Set-Cookie", "secret=1")
		io.WriteString(w, "ok")
	}))
	for _, tc := range []struct {
		name   string
		modify func(*http.Response) error
		want   [2]int
	}{
		{"before the head", func(*http.Response) error { panic("boom before") }, [2]int{502, 502}},
		{"in the body", func(res *http.Response) error {
			res.Body = panicBody{res.Body}
			return nil
		}, [2]int{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &testlog.Buffer{}
			p, base, errs := inlineFront(t, Options{Upstream: up,
				Logger: hclog.New(&hclog.LoggerOptions{Output: log})})
			p.cur.Load().rp.ModifyResponse = tc.modify
			c := inlineClient(t)
			fds := openFDs(t)
			if got := sendBoth(t, c, base); got != tc.want {
				t.Errorf("GET, POST answered %v, want %v", got, tc.want)
			}
			if tc.want[0] == 502 {
				expectErr(t, errs, "other 502")
				expectErr(t, errs, "other 502")
			}
			if n := strings.Count(log.String(), "[ERROR] panic while proxying a request"); n != 2 {
				t.Errorf("%d panic lines at error level, want 2:\n%s", n, log)
			}
			c.CloseIdleConnections()
			p.CloseIdleConnections()
			eventually(t, "upstream connections closed", func() bool { return cc.closed.Load() == cc.opened.Load() })
			eventually(t, "no file descriptor left open", func() bool { return openFDs(t) <= fds })
		})
	}
}

// panicBody panics on its first read, after the response head went out.
type panicBody struct{ io.ReadCloser }

func (panicBody) Read([]byte) (int, error) { panic("boom in the body") }
