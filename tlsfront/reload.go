package tlsfront

import (
	"fmt"
	"time"
)

// SetCertFiles makes the HTTPS listener configured at addr serve the pair from certFile and
// keyFile (a configuration reload that moved them), from the next handshake on. The pair
// is loaded first: on error nothing changes. Call it from one goroutine at a time, the
// one that calls ReloadStatic.
func (f *Front) SetCertFiles(addr, certFile, keyFile string) error {
	s := f.sites[addr]
	if s == nil || s.static == nil {
		return fmt.Errorf("listener %s has no certificate files to replace", addr)
	}
	next, err := LoadStaticCert(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("listener %s: %w", addr, err)
	}
	s.static.certFile, s.static.keyFile = certFile, keyFile
	s.static.cur.Store(next.cur.Load())
	s.conf.CertFile, s.conf.KeyFile = certFile, keyFile
	leaf := s.static.Leaf()
	f.log.Info("certificate files changed", "address", addr, "cert_file", certFile, "key_file", keyFile,
		"subject", leaf.Subject.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
