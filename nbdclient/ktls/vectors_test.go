package ktls

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// The traces of RFC 8448 section 3 ("Simple 1-RTT Handshake", TLS_AES_128_GCM_SHA256):
// traffic secrets, the keys and IVs derived from them, and the records protected with
// them after the handshake.
var (
	rfc8448ClientAppSecret = unhex("9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5")
	rfc8448ServerAppSecret = unhex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")

	// {server} send handshake record: the NewSessionTicket, the server's first record
	// under its application traffic key (sequence number 0).
	rfc8448ServerTicketRecord = unhex(`
		17030300de3a6b8f90414a97d6959c3487680de5134a2b240e6cffac116e95d4
		1d6af8f6b580dcf3d11d63c758db289a015940252f55713e061dc13e078891a3
		8efbcf5753ad8ef170ad3c7353d16d9da773b9ca7f2b9fa1b6c0d4a3d03f75e0
		9c30ba1e62972ac46f75f7b981be63439b2999ce13064615139891d5e4c5b406
		f16e3fc181a77ca475840025db2f0a77f81b5ab05b94c01346755f69232c8651
		9d86cbeeac87aac347d143f9605d64f650db4d023e70e952ca49fe5137121c74
		bc2697687e248746d6df353005f3bce18696129c8153556b3b6c6779b37bf159
		85684f`)
	// {client} send application_data record (sequence number 0).
	rfc8448ClientAppRecord = unhex(`
		1703030043a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f
		2b9819a8a5b46b395bd54a9a20441e2b62974e1f5a6292a2977014bd1e3deae6
		3aeebb21694915e4`)
	// {server} send application_data record: sequence number 1, after the ticket.
	rfc8448ServerAppRecord = unhex(`
		17030300432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36
		e30efaf97d90e6dffc602dcb501a59a8fcc49c4bf2e5f0a21c0047c2abf33254
		0dd032e167c2955d`)
	// {client} send alert record: close_notify, the client's sequence number 1.
	rfc8448ClientAlertRecord = unhex("1703030013c9872760655666b74d7ff1153efd6db6d0b0e3")
	// The payload of both application_data records: the bytes 0 to 0x31.
	rfc8448AppData = func() []byte {
		b := make([]byte, 50)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}()
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

func TestTrafficKeysRFC8448(t *testing.T) {
	for _, tc := range []struct {
		name            string
		secret, key, iv string
	}{
		{"server handshake", "b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38", "3fce516009c21727d0f2e4e86ee403bc", "5d313eb2671276ee13000b30"},
		{"client handshake", "b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21", "dbfaa693d1762c5b666af5d950258d01", "5bd3c71b836e0b76bb73265f"},
		{"server application", hex.EncodeToString(rfc8448ServerAppSecret), "9f02283b6c9c07efc26bb9f2ac92e356", "cf782b88dd83549aadf1e984"},
		{"client application", hex.EncodeToString(rfc8448ClientAppSecret), "17422dda596ed5d9acd890e3c63f5051", "5b78923dee08579033e523d9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := TrafficKeys(AES128GCMSHA256, unhex(tc.secret))
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(k.Key); got != tc.key {
				t.Errorf("key %s, want %s", got, tc.key)
			}
			if got := hex.EncodeToString(k.IV); got != tc.iv {
				t.Errorf("iv %s, want %s", got, tc.iv)
			}
		})
	}
}

// TestRecordsRFC8448 seals the client's records and opens the server's, sequence numbers
// included: the server's data record is its second under its key, after the ticket.
func TestRecordsRFC8448(t *testing.T) {
	client, err := NewCipher(AES128GCMSHA256, Direction{Secret: rfc8448ClientAppSecret})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := client.Seal(nil, TypeApplicationData, rfc8448AppData)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec, rfc8448ClientAppRecord) {
		t.Errorf("client application_data record:\n got %x\nwant %x", rec, rfc8448ClientAppRecord)
	}
	rec, _ = client.Seal(make([]byte, 3, 64), TypeAlert, []byte{1, 0})
	if !bytes.Equal(rec[3:], rfc8448ClientAlertRecord) {
		t.Errorf("client close_notify record (appended):\n got %x\nwant %x", rec[3:], rfc8448ClientAlertRecord)
	}

	server, err := NewCipher(AES128GCMSHA256, Direction{Secret: rfc8448ServerAppSecret})
	if err != nil {
		t.Fatal(err)
	}
	typ, pt, err := server.Open(bytes.Clone(rfc8448ServerTicketRecord))
	if err != nil {
		t.Fatal(err)
	}
	if typ != TypeHandshake || len(pt) == 0 || pt[0] != msgNewSessionTicket {
		t.Errorf("ticket record opens to type %d, message %x…", typ, pt[:min(4, len(pt))])
	}
	typ, pt, err = server.Open(bytes.Clone(rfc8448ServerAppRecord))
	if err != nil {
		t.Fatal(err)
	}
	if typ != TypeApplicationData || !bytes.Equal(pt, rfc8448AppData) {
		t.Errorf("server data record opens to type %d: %x", typ, pt)
	}

	// The wrong sequence number does not open, and leaves the counter alone.
	again, _ := NewCipher(AES128GCMSHA256, Direction{Secret: rfc8448ServerAppSecret})
	if _, _, err := again.Open(bytes.Clone(rfc8448ServerAppRecord)); err == nil {
		t.Error("the server's second record opened with sequence number 0")
	}
	if again.Seq() != 0 {
		t.Errorf("a failed open moved the sequence number to %d", again.Seq())
	}
}

// TestCryptoInfo checks the kernel structs byte by byte against the RFC 8448 keys: the
// salt/iv split of AES-GCM, ChaCha20's whole IV, rec_seq big-endian.
func TestCryptoInfo(t *testing.T) {
	d := Direction{Secret: rfc8448ClientAppSecret, Seq: 0x0102030405060708}
	b, err := cryptoInfo(AES128GCMSHA256, d)
	if err != nil {
		t.Fatal(err)
	}
	// struct tls12_crypto_info_aes_gcm_128: 2+2+8+16+4+8.
	want := append([]byte{0x04, 0x03, 51, 0}, unhex("ee08579033e523d9")...) // iv: IV[4:]
	want = append(want, unhex("17422dda596ed5d9acd890e3c63f5051")...)       // key
	want = append(want, unhex("5b78923d")...)                               // salt: IV[:4]
	want = append(want, 1, 2, 3, 4, 5, 6, 7, 8)                             // rec_seq
	if !bytes.Equal(b, want) {
		t.Errorf("AES-128-GCM crypto_info:\n got %x\nwant %x", b, want)
	}
	for _, tc := range []struct {
		suite Suite
		size  int
		typ   byte
	}{{AES256GCMSHA384, 56, 52}, {CHACHA20POLY1305SHA256, 56, 54}} {
		secretLen := 32
		if tc.suite == AES256GCMSHA384 {
			secretLen = 48
		}
		b, err := cryptoInfo(tc.suite, Direction{Secret: make([]byte, secretLen), Seq: 9})
		if err != nil {
			t.Fatal(err)
		}
		k, _ := TrafficKeys(tc.suite, make([]byte, secretLen))
		if len(b) != tc.size || b[2] != tc.typ || b[len(b)-1] != 9 {
			t.Errorf("%v: %d bytes, cipher %d, last %d", tc.suite, len(b), b[2], b[len(b)-1])
		}
		if tc.suite == CHACHA20POLY1305SHA256 && (!bytes.Equal(b[4:16], k.IV) || !bytes.Equal(b[16:48], k.Key)) {
			t.Errorf("ChaCha20-Poly1305 crypto_info: iv and key not in place: %x", b)
		}
	}
	if _, err := cryptoInfo(Suite(0xc02f), d); err == nil {
		t.Error("a TLS 1.2 suite accepted")
	}
}

func TestNextSecret(t *testing.T) {
	// KeyUpdate is HKDF-Expand-Label(secret, "traffic upd", "", 32): check the label's
	// framing against an expansion done by hand.
	next, err := NextSecret(AES128GCMSHA256, rfc8448ServerAppSecret)
	if err != nil {
		t.Fatal(err)
	}
	if len(next) != 32 || bytes.Equal(next, rfc8448ServerAppSecret) {
		t.Fatalf("next secret %x", next)
	}
	c, _ := NewCipher(AES128GCMSHA256, Direction{Secret: rfc8448ServerAppSecret, Seq: 5})
	if err := c.Update(); err != nil {
		t.Fatal(err)
	}
	if c.Seq() != 0 || !bytes.Equal(c.secret, next) {
		t.Errorf("after Update: seq %d secret %x", c.Seq(), c.secret)
	}
}
