// Package pki makes throwaway certificate authorities and certificates for tests: a CA and
// the server and client certificates it issues, as PEM files in the layout that nbdkit's
// --tls-certificates and libnbd's tls-certificates directories expect (ca-cert.pem,
// server-cert.pem, server-key.pem, client-cert.pem, client-key.pem), with the defects
// the bad-input tests need (expired, another name, another CA).
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// TB is the part of testing.TB the helpers use.
type TB interface {
	Helper()
	Fatal(args ...any)
	TempDir() string
}

// CA is a certificate authority whose files live in Dir.
type CA struct {
	Dir  string
	Cert *x509.Certificate
	// PEM is the CA certificate; File is Dir/ca-cert.pem.
	PEM  []byte
	File string
	Pool *x509.CertPool
	key  *ecdsa.PrivateKey
}

var serial atomic.Int64

// NewCA makes a CA (common name name) in a fresh temporary directory.
func NewCA(t TB, name string) *CA {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{Dir: dir, Cert: cert, key: key, Pool: x509.NewCertPool(), File: filepath.Join(dir, "ca-cert.pem")}
	ca.Pool.AddCert(cert)
	ca.PEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	write(t, ca.File, ca.PEM, 0o644)
	return ca
}

// Options shape a certificate. Zero values: valid from an hour ago for a day, no names.
type Options struct {
	// CommonName is the subject's CN.
	CommonName string
	// DNS and IPs are the subject alternative names.
	DNS []string
	IPs []net.IP
	// Client makes a client certificate (extended key usage clientAuth), else serverAuth.
	Client bool
	// NotBefore and NotAfter bound the validity.
	NotBefore, NotAfter time.Time
}

// Cert is an issued certificate and its key, in Dir/NAME-cert.pem and Dir/NAME-key.pem.
type Cert struct {
	CertFile, KeyFile string
	CertPEM, KeyPEM   []byte
	TLS               tls.Certificate
}

// Issue signs a certificate named name (its files' prefix: "server", "client" for the
// directory layouts).
func (ca *CA) Issue(t TB, name string, o Options) *Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	usage := x509.ExtKeyUsageServerAuth
	if o.Client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: o.CommonName},
		NotBefore: o.NotBefore, NotAfter: o.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: o.DNS, IPAddresses: o.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cert{
		CertFile: filepath.Join(ca.Dir, name+"-cert.pem"), KeyFile: filepath.Join(ca.Dir, name+"-key.pem"),
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}
	write(t, c.CertFile, c.CertPEM, 0o644)
	write(t, c.KeyFile, c.KeyPEM, 0o600)
	if c.TLS, err = tls.X509KeyPair(c.CertPEM, c.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return c
}

// Localhost are the names a server certificate for tests on this machine carries.
var Localhost = Options{CommonName: "localhost", DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}

// Set is a CA with a server certificate for the loopback addresses (and extra IPs) and a
// client certificate with common name client: the usual fixture.
type Set struct {
	*CA
	Server, Client *Cert
}

// New makes a Set; the server certificate also carries ips (a QEMU guest's server address).
func New(t TB, clientCN string, ips ...net.IP) *Set {
	t.Helper()
	ca := NewCA(t, "nbdroot test CA")
	srv := Localhost
	srv.IPs = append(append([]net.IP(nil), srv.IPs...), ips...)
	return &Set{CA: ca, Server: ca.Issue(t, "server", srv),
		Client: ca.Issue(t, "client", Options{CommonName: clientCN, Client: true})}
}

func write(t TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}
