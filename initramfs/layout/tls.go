package layout

// The client's TLS material (nbdroot initramfs --tls-ca, --tls-cert, --tls-key): the init
// speaks TLS to the NBD server when the image carries TLSCA (docs/tls.md).
const (
	// TLSCA holds the CA certificates (PEM) the server's certificate must chain to.
	TLSCA = "/etc/nbdroot/tls/ca.pem"
	// TLSCert is the client's certificate (PEM), for servers that ask for one.
	TLSCert = "/etc/nbdroot/tls/client.pem"
	// TLSKey is the client certificate's private key (PEM), mode 0400.
	TLSKey = "/etc/nbdroot/tls/client.key"
)
