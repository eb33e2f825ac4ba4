package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeKeyPair writes a self-signed certificate and its key into a fresh directory.
func writeKeyPair(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "a.test"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func TestParseTLS(t *testing.T) {
	certFile, keyFile := writeKeyPair(t)
	tests := []struct {
		name string
		src  string
		want []Listener
	}{
		{
			name: "acme with defaults, and a redirecting plain listener",
			src: `
listener {
  address = ":80"
  redirect_https = true
}
listener {
  address = ":443"
  tls {
    acme {
      domains = ["Example.com", "www.example.com."]
      agree_terms = true
    }
  }
}`,
			want: []Listener{
				{Address: ":80", Redirect: &Redirect{Status: 308}},
				{Address: ":443", TLS: &TLS{MinVersion: tls.VersionTLS12, ACME: &ACME{
					Domains: []string{"example.com", "www.example.com"}, CA: LetsEncryptCA,
					Challenges: []string{ChallengeHTTP01, ChallengeTLSALPN01}, AgreeTerms: true,
				}}},
			},
		},
		{
			name: "acme with everything set, staging",
			src: fmt.Sprintf(`
listener {
  address = ":8443"
  tls {
    min_version = "1.3"
    hsts = "max-age=31536000; includeSubDomains"
    acme {
      domains = ["example.com"]
      email = "ops@example.com"
      staging = true
      trusted_roots = [%q]
      storage = "/srv/certs"
      agree_terms = true
      challenges = ["tls-alpn-01"]
    }
  }
}`, certFile),
			want: []Listener{{Address: ":8443", TLS: &TLS{MinVersion: tls.VersionTLS13, HSTS: "max-age=31536000; includeSubDomains", ACME: &ACME{
				Domains: []string{"example.com"}, Email: "ops@example.com", CA: LetsEncryptStagingCA, Staging: true,
				TrustedRoots: []string{certFile}, Storage: "/srv/certs", AgreeTerms: true, Challenges: []string{ChallengeTLSALPN01},
			}}}},
		},
		{
			name: "static files, redirect to another port",
			src: fmt.Sprintf(`
listener {
  address = ":8080"
  redirect_https = true
  redirect_status = 301
  redirect_port = 443
}
listener {
  address = ":8443"
  tls {
    cert_file = %q
    key_file = %q
  }
}`, certFile, keyFile),
			want: []Listener{
				{Address: ":8080", Redirect: &Redirect{Status: 301, Port: 443}},
				{Address: ":8443", TLS: &TLS{MinVersion: tls.VersionTLS12, CertFile: certFile, KeyFile: keyFile}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.src + "\nupstream {\n  url = \"http://127.0.0.1:3000\"\n}\n"
			cfg, err := Parse([]string{"-config", writeConfig(t, src)}, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.Listeners, tt.want) {
				t.Errorf("listeners\n got %s\nwant %s", dump(cfg.Listeners), dump(tt.want))
			}
		})
	}
}

func dump(ls []Listener) string {
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "{%s", l.Address)
		if l.TLS != nil {
			fmt.Fprintf(&b, " tls=%+v", *l.TLS)
			if l.TLS.ACME != nil {
				fmt.Fprintf(&b, " acme=%+v", *l.TLS.ACME)
			}
		}
		if l.Redirect != nil {
			fmt.Fprintf(&b, " redirect=%+v", *l.Redirect)
		}
		b.WriteString("} ")
	}
	return b.String()
}

func TestTLSFileErrors(t *testing.T) {
	certFile, keyFile := writeKeyPair(t)
	_, otherKey := writeKeyPair(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	acme := func(body string) string {
		return "listener {\n  address = \":443\"\n  tls {\n    acme {\n" + body + "\n    }\n  }\n}\n"
	}
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "tls without a certificate",
			src:  "listener {\n  address = \":443\"\n  tls {\n    hsts = \"\"\n  }\n}\n",
			want: []string{"config.hcl:3:7: listener.tls: needs a certificate: cert_file and key_file, or an acme { domains = [...] } block"},
		},
		{
			name: "files and acme both",
			src:  fmt.Sprintf("listener {\n  address = \":443\"\n  tls {\n    cert_file = %q\n    key_file = %q\n    acme {\n      domains = [\"a.test\"]\n      agree_terms = true\n    }\n  }\n}\n", certFile, keyFile),
			want: []string{"config.hcl:4:17: listener.tls.cert_file: is set as well as an acme block; use either certificate files or acme, not both"},
		},
		{
			name: "cert without key",
			src:  fmt.Sprintf("listener {\n  address = \":443\"\n  tls {\n    cert_file = %q\n  }\n}\n", certFile),
			want: []string{"config.hcl:4:17: listener.tls.cert_file: needs key_file as well"},
		},
		{
			name: "missing certificate file",
			src:  fmt.Sprintf("listener {\n  address = \":443\"\n  tls {\n    cert_file = %q\n    key_file = %q\n  }\n}\n", missing, keyFile),
			want: []string{"config.hcl:4:17: listener.tls.cert_file: cannot read the certificate: open " + missing + ": no such file or directory"},
		},
		{
			name: "key that does not match",
			src:  fmt.Sprintf("listener {\n  address = \":443\"\n  tls {\n    cert_file = %q\n    key_file = %q\n  }\n}\n", certFile, otherKey),
			want: []string{"config.hcl:4:17: listener.tls.cert_file: " + fmt.Sprintf("%q with key_file %q is not a usable certificate and key", certFile, otherKey)},
		},
		{
			name: "bad min_version and hsts",
			src:  fmt.Sprintf("listener {\n  address = \":443\"\n  tls {\n    cert_file = %q\n    key_file = %q\n    min_version = \"1.0\"\n    hsts = \"1 year\"\n  }\n}\n", certFile, keyFile),
			want: []string{
				`config.hcl:6:19: listener.tls.min_version: "1.0" is not allowed; write one of "1.2", "1.3"`,
				`config.hcl:7:12: listener.tls.hsts: "1 year" has no max-age=SECONDS`,
			},
		},
		{
			name: "acme without domains or agreement",
			src:  acme(`      email = "ops@example.com"`),
			want: []string{
				`config.hcl:4:10: listener.tls.acme: needs domains`,
				`config.hcl:4:10: listener.tls.acme: agree_terms must be true: read the CA's terms of service`,
			},
		},
		{
			name: "acme terms refused",
			src:  acme("      domains = [\"a.test\"]\n      agree_terms = false"),
			want: []string{`config.hcl:6:21: listener.tls.acme.agree_terms: must be true`},
		},
		{
			name: "acme bad values",
			src: acme(fmt.Sprintf("      domains = [\"a.test\", \"*.b.test\", \"https://c.test\", \"a.test\"]\n      email = \"ops\"\n      ca = \"http://ca.test/dir\"\n      trusted_roots = [%q, %q]\n      agree_terms = true\n      challenges = [\"dns-01\"]",
				certFile, keyFile)),
			want: []string{
				`config.hcl:5:28: listener.tls.acme.domains: "*.b.test" is a wildcard, which needs the DNS-01 challenge`,
				`config.hcl:5:40: listener.tls.acme.domains: "https://c.test" is not a domain name`,
				`config.hcl:5:58: listener.tls.acme.domains: "a.test" is listed twice`,
				`config.hcl:6:15: listener.tls.acme.email: "ops" is not an email address`,
				`config.hcl:7:12: listener.tls.acme.ca: "http://ca.test/dir" is not an https URL of an ACME directory`,
				fmt.Sprintf(`listener.tls.acme.trusted_roots: %q holds no PEM certificate`, keyFile),
				`listener.tls.acme.challenges: "dns-01" is not allowed; write "http-01", "tls-alpn-01"`,
			},
		},
		{
			name: "staging with another CA",
			src:  acme("      domains = [\"a.test\"]\n      ca = \"https://ca.test/dir\"\n      staging = true\n      agree_terms = true"),
			want: []string{`config.hcl:7:17: listener.tls.acme.staging: switches ca to Let's Encrypt's staging directory, but ca names another CA`},
		},
		{
			name: "http-01 only without a plain listener",
			src:  acme("      domains = [\"a.test\"]\n      agree_terms = true\n      challenges = [\"http-01\"]"),
			want: []string{`config.hcl:7:20: listener.tls.acme.challenges: allows only http-01, which is answered on a plain-HTTP listener, and there is none`},
		},
		{
			name: "redirect without an HTTPS listener",
			src:  "listener {\n  address = \":80\"\n  redirect_https = true\n  redirect_status = 200\n}\n",
			want: []string{
				"config.hcl:3:20: listener.redirect_https: needs a listener with a tls block to redirect to",
				"config.hcl:4:21: listener.redirect_status: 200 is not a redirect status; write 308 (keeps the method), 301, 302 or 307",
			},
		},
		{
			name: "redirect settings without redirect_https",
			src:  "listener {\n  address = \":80\"\n  redirect_port = 443\n}\n",
			want: []string{"config.hcl:3:19: listener.redirect_port: only applies with redirect_https = true"},
		},
		{
			name: "redirect on the HTTPS listener",
			src:  fmt.Sprintf("listener {\n  address = \":443\"\n  redirect_https = true\n  tls {\n    cert_file = %q\n    key_file = %q\n  }\n}\n", certFile, keyFile),
			want: []string{"config.hcl:3:20: listener.redirect_https: is for a plain-HTTP listener, and this one has a tls block"},
		},
		{
			name: "unknown settings and blocks inside tls",
			src:  "listener {\n  address = \":443\"\n  tls {\n    cert = \"x\"\n    acme {\n      domain = [\"a\"]\n    }\n    letsencrypt {\n    }\n  }\n}\n",
			want: []string{
				"config.hcl:4:5: listener.tls.cert: unknown setting; tls takes cert_file, hsts, key_file, min_version and the block acme",
				"config.hcl:6:7: listener.tls.acme.domain: unknown setting; did you mean domains; acme takes agree_terms, ca, challenges, domains, email, staging, storage, trusted_roots",
				"config.hcl:8:5: listener.tls.letsencrypt: unknown block; tls takes",
			},
		},
		{
			name: "type error inside acme names the setting",
			src:  acme("      domains = \"a.test\"\n      agree_terms = true"),
			want: []string{"config.hcl:5:18: listener.tls.acme.domains: Unsuitable value type: list of string required"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.src + "upstream {\n  url = \"http://127.0.0.1:3000\"\n}\n"
			cfg, err := Parse([]string{"-config", writeConfig(t, src)}, &bytes.Buffer{})
			if err == nil {
				t.Fatalf("Parse accepted:\n%s\n%s", src, dump(cfg.Listeners))
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

// The admin listener may not share a TLS listener's address either.
func TestAdminNotOnTLSListener(t *testing.T) {
	certFile, keyFile := writeKeyPair(t)
	src := fmt.Sprintf("listener {\n  address = \"127.0.0.1:8443\"\n  tls {\n    cert_file = %q\n    key_file = %q\n  }\n}\nadmin {\n  address = \"127.0.0.1:8443\"\n}\nupstream {\n  url = \"http://a:1\"\n}\n", certFile, keyFile)
	if _, err := Parse([]string{"-config", writeConfig(t, src)}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "also a listener address") {
		t.Errorf("admin on the TLS listener's address: %v; want refused", err)
	}
}
