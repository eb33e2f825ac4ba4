package drain

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkHandler is the drain's cost per request on the request path (accounting,
// the in-flight list), with nobody reading the list: an A/B against the commit before
// the list shows what it costs. Run with -cpu 1,2.
func BenchmarkHandler(b *testing.B) {
	d := New(Options{})
	h := d.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest("GET", "/things/42?x=1", nil)
		r.Header.Set("Content-Type", "text/plain")
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			h.ServeHTTP(w, r)
		}
	})
}

type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}
