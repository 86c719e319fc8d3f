package ktls

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/pki"
)

// TestHandoffOpenSSL checks the hand-off of each cipher suite against another TLS stack:
// `openssl s_server` forced to one TLS 1.3 suite (crypto/tls cannot be), which sends its
// two session tickets after the handshake. After the hand-off our records must reach its
// output and its input must open with our keys: that proves the SHA-384 schedule of
// AES-256-GCM and ChaCha20-Poly1305's keys, which crypto/tls on this machine never picks.
func TestHandoffOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
			t.Fatal("openssl is not installed (NBDROOT_REQUIRE_PEERS=1): run scripts/deps.sh")
		}
		t.Skip("openssl is not installed")
	}
	p := pki.New(t, "client")
	for _, suite := range []Suite{AES128GCMSHA256, AES256GCMSHA384, CHACHA20POLY1305SHA256} {
		t.Run(suite.String(), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			cmd := exec.Command(openssl, "s_server", "-accept", addr, "-naccept", "1", "-quiet",
				"-cert", p.Server.CertFile, "-key", p.Server.KeyFile, "-tls1_3", "-ciphersuites", suite.String())
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			lines := bufio.NewReader(stdout)

			var raw net.Conn
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				if raw, err = net.Dial("tcp", addr); err == nil || time.Now().After(deadline) {
					break
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.SetDeadline(time.Now().Add(20 * time.Second))
			counter, log := NewCounter(raw), &KeyLog{}
			client := tls.Client(counter, &tls.Config{RootCAs: p.Pool, ServerName: "localhost", MinVersion: tls.VersionTLS13, KeyLogWriter: log})
			if err := client.Handshake(); err != nil {
				t.Fatal(err)
			}
			if got := Suite(client.ConnectionState().CipherSuite); got != suite {
				t.Fatalf("negotiated %v", got)
			}
			counter.Start()
			// The negotiation: a line each way through crypto/tls.
			fmt.Fprintln(client, "client hello")
			expectLine(t, lines, "client hello")
			fmt.Fprintln(stdin, "server hello")
			if got, err := bufio.NewReader(io.LimitReader(client, 13)).ReadString('\n'); err != nil || got != "server hello\n" {
				t.Fatalf("through crypto/tls: %q, %v", got, err)
			}

			st, err := Handoff(suite, log, counter)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d records sent, %d received (tickets included)", st.TX.Seq, st.RX.Seq)
			tx, _ := NewCipher(suite, st.TX)
			rx, _ := NewCipher(suite, st.RX)
			rec, _ := tx.Seal(nil, TypeApplicationData, []byte("after the hand-off\n"))
			raw.Write(rec)
			expectLine(t, lines, "after the hand-off")
			fmt.Fprintln(stdin, "server again")
			typ, pt, err := rx.Open(readRecord(t, raw))
			if err != nil || typ != TypeApplicationData || string(pt) != "server again\n" {
				t.Fatalf("openssl's record after the hand-off: type %d %q %v", typ, pt, err)
			}
		})
	}
}

func expectLine(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	got, err := r.ReadString('\n')
	if err != nil || strings.TrimRight(got, "\n") != want {
		t.Fatalf("openssl printed %q (%v), want %q", got, err, want)
	}
}
