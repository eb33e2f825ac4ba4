package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// The file side of HTTPS listeners: listener { tls { ... acme { ... } } } and the
// redirect settings of plain ones. config.hcl documents each setting.

func tlsMinVersions() []string { return []string{"1.2", "1.3"} }
func acmeChallenges() []string { return []string{ChallengeHTTP01, ChallengeTLSALPN01} }
func redirectStatuses() []int {
	return []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect}
}

// applyListenerTLS returns the listener at addr with its tls block and redirect settings
// applied; s is the listener block, for reporting.
func applyListenerTLS(b listenerBlock, addr string, s section) Listener {
	l := Listener{Address: addr}
	if b.TLS != nil {
		l.TLS = applyTLS(b.TLS, s.nestedSection("tls"))
	}
	redirect := b.RedirectHTTPS != nil && *b.RedirectHTTPS
	switch {
	case redirect && l.TLS != nil:
		s.fail("redirect_https", -1, errors.New("is for a plain-HTTP listener, and this one has a tls block; put redirect_https = true on the port 80 listener"))
	case redirect:
		r := DefaultRedirect()
		apply(s, "redirect_status", b.RedirectStatus, parseRedirectStatus, &r.Status)
		apply(s, "redirect_port", b.RedirectPort, parsePort, &r.Port)
		l.Redirect = &r
	default:
		for attr, v := range map[string]*int{"redirect_status": b.RedirectStatus, "redirect_port": b.RedirectPort} {
			if v != nil {
				s.fail(attr, -1, errors.New("only applies with redirect_https = true; add that or remove this"))
			}
		}
	}
	return l
}

func applyTLS(b *tlsBlock, s section) *TLS {
	t := DefaultTLS()
	apply(s, "min_version", b.MinVersion, parseTLSMinVersion, &t.MinVersion)
	apply(s, "hsts", b.HSTS, parseHSTS, &t.HSTS)
	certSet := b.CertFile != nil && *b.CertFile != ""
	keySet := b.KeyFile != nil && *b.KeyFile != ""
	switch {
	case b.ACME != nil && (certSet || keySet):
		attr := "cert_file"
		if !certSet {
			attr = "key_file"
		}
		s.fail(attr, -1, errors.New("is set as well as an acme block; use either certificate files or acme, not both"))
	case b.ACME != nil:
		t.ACME = applyACME(b.ACME, s.nestedSection("acme"))
	case certSet && keySet:
		t.CertFile, t.KeyFile = *b.CertFile, *b.KeyFile
		if attr, err := checkKeyPair(t.CertFile, t.KeyFile); err != nil {
			s.fail(attr, -1, err)
		}
	case certSet:
		s.fail("cert_file", -1, errors.New("needs key_file as well: the PEM file of the certificate's private key"))
	case keySet:
		s.fail("key_file", -1, errors.New("needs cert_file as well: the PEM file of the certificate chain"))
	default:
		s.failBlock(errors.New(`needs a certificate: cert_file and key_file, or an acme { domains = [...] } block`))
	}
	return &t
}

func applyACME(b *acmeBlock, s section) *ACME {
	a := DefaultACME()
	if b.Domains == nil || len(*b.Domains) == 0 {
		s.failBlock(errors.New(`needs domains, e.g. domains = ["example.com", "www.example.com"]`))
	} else {
		for i, d := range *b.Domains {
			name, err := parseDomain(d)
			switch {
			case err != nil:
				s.fail("domains", i, err)
			case slices.Contains(a.Domains, name):
				s.fail("domains", i, fmt.Errorf("%q is listed twice", d))
			default:
				a.Domains = append(a.Domains, name)
			}
		}
	}
	apply(s, "email", b.Email, parseEmail, &a.Email)
	apply(s, "ca", b.CA, parseACMEDirectory, &a.CA)
	apply(s, "staging", b.Staging, func(v bool) (bool, error) { return v, nil }, &a.Staging)
	if a.Staging {
		if a.CA != LetsEncryptCA {
			s.fail("staging", -1, errors.New("switches ca to Let's Encrypt's staging directory, but ca names another CA; remove one of them"))
		}
		a.CA = LetsEncryptStagingCA
	}
	if b.TrustedRoots != nil {
		for i, f := range *b.TrustedRoots {
			if err := checkRootsFile(f); err != nil {
				s.fail("trusted_roots", i, err)
			} else {
				a.TrustedRoots = append(a.TrustedRoots, f)
			}
		}
	}
	apply(s, "storage", b.Storage, func(v string) (string, error) { return v, nil }, &a.Storage)
	a.AgreeTerms = b.AgreeTerms != nil && *b.AgreeTerms
	if !a.AgreeTerms {
		err := errors.New("must be true: read the CA's terms of service (Let's Encrypt: https://letsencrypt.org/repository/) and write agree_terms = true")
		if b.AgreeTerms == nil {
			s.failBlock(fmt.Errorf("agree_terms %w", err))
		} else {
			s.fail("agree_terms", -1, err)
		}
	}
	if b.Challenges != nil {
		a.Challenges = nil
		for i, c := range *b.Challenges {
			switch {
			case !slices.Contains(acmeChallenges(), c):
				s.fail("challenges", i, fmt.Errorf("%q is not allowed; write %s", c, quoteList(acmeChallenges())))
			case slices.Contains(a.Challenges, c):
				s.fail("challenges", i, fmt.Errorf("%q is listed twice", c))
			default:
				a.Challenges = append(a.Challenges, c)
			}
		}
		if len(*b.Challenges) == 0 {
			s.fail("challenges", -1, fmt.Errorf("is empty; write one or both of %s", quoteList(acmeChallenges())))
		}
	}
	return &a
}

// checkListenersTLS checks what concerns several listeners: a redirect needs an HTTPS
// listener to go to, and ACME limited to HTTP-01 needs a plain-HTTP listener.
func checkListenersTLS(out []Listener, decoded []listenerBlock, blocks []*hclsyntax.Block, filename string, probs *problems) {
	hasTLS := slices.ContainsFunc(out, func(l Listener) bool { return l.TLS != nil })
	hasPlain := slices.ContainsFunc(out, func(l Listener) bool { return l.TLS == nil })
	for i, b := range decoded {
		idx := slices.IndexFunc(out, func(l Listener) bool { return l.Address == b.Address })
		if idx < 0 || i >= len(blocks) {
			continue // its address was refused already
		}
		l, s := out[idx], section{name: "listener", file: filename, body: blocks[i].Body, probs: probs}
		if l.Redirect != nil && !hasTLS {
			s.fail("redirect_https", -1, errors.New("needs a listener with a tls block to redirect to; add one, or remove redirect_https"))
		}
		if l.TLS != nil && l.TLS.ACME != nil && !hasPlain && !slices.Contains(l.TLS.ACME.Challenges, ChallengeTLSALPN01) {
			s.nestedSection("tls").nestedSection("acme").fail("challenges", -1, errors.New(
				`allows only http-01, which is answered on a plain-HTTP listener, and there is none; add listener { address = ":80" } or allow "tls-alpn-01"`))
		}
	}
}

// nestedSection returns the section of the block typ inside s (its first one).
func (s section) nestedSection(typ string) section {
	n := section{name: s.name + "." + typ, file: s.file, probs: s.probs}
	if s.body != nil {
		for _, b := range s.body.Blocks {
			if b.Type == typ {
				n.body = b.Body
				break
			}
		}
	}
	return n
}

// failBlock records err against the block itself, pointing at its opening brace.
func (s section) failBlock(err error) {
	var rng hcl.Range
	if s.body != nil {
		rng = s.body.SrcRange
	}
	s.probs.add(s.file, rng, fmt.Sprintf("%s: %v", s.name, err))
}

func parseTLSMinVersion(s string) (uint16, error) {
	switch s {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("%q is not allowed; write one of %s (older versions are insecure)", s, quoteList(tlsMinVersions()))
}

// parseHSTS accepts "" (no header) or a Strict-Transport-Security value.
func parseHSTS(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	for _, d := range strings.Split(s, ";") {
		name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
		if strings.EqualFold(name, "max-age") {
			if _, err := strconv.ParseUint(val, 10, 63); err == nil {
				return s, nil
			}
		}
	}
	return "", fmt.Errorf("%q has no max-age=SECONDS; write e.g. \"max-age=31536000\" or \"max-age=31536000; includeSubDomains\", or \"\" for no header", s)
}

func parseRedirectStatus(n int) (int, error) {
	if !slices.Contains(redirectStatuses(), n) {
		return 0, fmt.Errorf("%d is not a redirect status; write 308 (keeps the method), 301, 302 or 307", n)
	}
	return n, nil
}

func parsePort(n int) (int, error) {
	if n < 0 || n > 65535 {
		return 0, fmt.Errorf("%d is not a port; write 1 to 65535, or 0 for the HTTPS listener's port", n)
	}
	return n, nil
}

// parseDomain accepts a DNS name or an IP address to obtain a certificate for.
func parseDomain(s string) (string, error) {
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	if net.ParseIP(name) != nil {
		return name, nil
	}
	if strings.HasPrefix(name, "*.") {
		return "", fmt.Errorf("%q is a wildcard, which needs the DNS-01 challenge; list each name instead", s)
	}
	if name == "" || len(name) > 253 || strings.Contains(name, "..") {
		return "", fmt.Errorf("%q is not a domain name; write e.g. \"example.com\"", s)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			strings.IndexFunc(label, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') }) >= 0 {
			return "", fmt.Errorf("%q is not a domain name (no scheme, port or path); write e.g. \"example.com\"", s)
		}
	}
	return name, nil
}

func parseEmail(s string) (string, error) {
	if s != "" && (!strings.Contains(s, "@") || strings.ContainsAny(s, " <>")) {
		return "", fmt.Errorf("%q is not an email address; write e.g. \"ops@example.com\", or \"\" for none", s)
	}
	return s, nil
}

func parseACMEDirectory(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("%q is not an https URL of an ACME directory; write e.g. %q", s, LetsEncryptCA)
	}
	return s, nil
}

// checkKeyPair loads a certificate and key as the HTTPS listener will, and names the
// setting ("cert_file" or "key_file") at fault.
func checkKeyPair(certFile, keyFile string) (string, error) {
	if _, err := os.ReadFile(certFile); err != nil {
		return "cert_file", fmt.Errorf("cannot read the certificate: %v", err)
	}
	if _, err := os.ReadFile(keyFile); err != nil {
		return "key_file", fmt.Errorf("cannot read the private key: %v", err)
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		return "cert_file", fmt.Errorf("%q with key_file %q is not a usable certificate and key: %v; both must be PEM, the certificate first in its file", certFile, keyFile, err)
	}
	return "", nil
}

// checkRootsFile checks that path holds at least one PEM certificate.
func checkRootsFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read: %v", err)
	}
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("%q holds a certificate that does not parse: %v", path, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%q holds no PEM certificate; give the CA's root certificate in PEM form", path)
	}
	return nil
}
