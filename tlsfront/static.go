package tlsfront

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync/atomic"
)

// StaticCert serves a certificate and key read from files, and reads them again on
// Reload. The swap is atomic: a handshake sees the old pair or the new one, never a mix,
// and a pair that fails to load leaves the old one in place.
type StaticCert struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadStaticCert reads the PEM certificate chain and private key.
func LoadStaticCert(certFile, keyFile string) (*StaticCert, error) {
	s := &StaticCert{certFile: certFile, keyFile: keyFile}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the files again and serves the new pair from the next handshake on. On
// error the pair served so far stays.
func (s *StaticCert) Reload() error {
	c, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return fmt.Errorf("load certificate %s and key %s: %w", s.certFile, s.keyFile, err)
	}
	if c.Leaf == nil { // Go 1.23+ fills Leaf; keep working if a build does not
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return fmt.Errorf("parse certificate %s: %w", s.certFile, err)
		}
	}
	s.cur.Store(&c)
	return nil
}

// Leaf is the certificate served now.
func (s *StaticCert) Leaf() *x509.Certificate { return s.cur.Load().Leaf }

// GetCertificate is for tls.Config.GetCertificate.
func (s *StaticCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cur.Load(), nil
}
