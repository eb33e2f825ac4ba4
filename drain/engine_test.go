package drain

import (
	"net/http"
	"os"

	"github.com/drainproxy/drainproxy/h1serve"
)

// testServer is the server the drain's tests serve h on: h1serve's, drainproxy's default
// engine, or net/http's when DRAINPROXY_SERVER_ENGINE says so (CI runs the whole suite
// once on each engine).
func testServer(h http.Handler) Server {
	if os.Getenv("DRAINPROXY_SERVER_ENGINE") == "net/http" {
		return HTTPServer(&http.Server{Handler: h})
	}
	return &h1serve.Server{Handler: h}
}
