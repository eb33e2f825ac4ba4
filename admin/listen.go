package admin

import "net"

// Listen binds the admin address as Start does when Options.Listener is nil, with the same
// one-line errors; for a caller that registers the socket (to hand it over at an upgrade)
// before passing it as Options.Listener.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, listenError(addr, err)
	}
	return ln, nil
}
