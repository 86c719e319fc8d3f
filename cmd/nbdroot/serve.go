package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nbdroot/nbdroot/nbdserver"
)

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

const serveUsage = `usage: nbdroot serve [options]

Serve files and block devices over NBD (fixed newstyle; structured replies, block status,
TLS). Safe by default: one client at a time may write an export, FLUSH and FUA are always
honoured, and a SIGTERM answers every request in flight and flushes before exiting.

  nbdroot serve --listen 127.0.0.1:10809 --export root=/srv/nbd/root.img
  nbdroot serve --export root=/srv/root.img,cow,cowdir=/var/lib/nbdroot/cow,allow=10.0.0.0/24
  nbdroot serve -C /etc/nbd-server/config          (an nbd-server configuration, unchanged)

Each listener prints "listening on ADDR" once it accepts connections (port 0 → a free port).
systemd socket activation (LISTEN_FDS) replaces the listeners. SIGHUP re-reads the
configuration without dropping connections; SIGTERM or SIGINT shut down gracefully.

--export NAME=PATH[,option…] options:
  readonly, ro       refuse writes
  cow                each client writes to its own overlay; the image is never written
  cowdir=DIR         keep each client's overlay in DIR across disconnects and restarts
  cowtmp=DIR         temporary overlays in DIR instead of $TMPDIR
  allow=CIDR         only these clients (repeat the option for more networks)
  default            the export for clients asking for the empty name
                     (a single export is the default anyway)
  shared             let several clients write at once (corrupts ordinary filesystems)
  rofallback         while a client writes, serve others read-only instead of refusing
  desc=TEXT          description shown to clients
  maxconn=N          at most N connections to this export
  notrim             do not offer TRIM
  sync               make every write durable before replying
  rotational         tell clients the medium is rotational
  tls                clients must use TLS for this export
  timeout=DURATION   close connections idle this long

options:
`

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o nbdserver.Options
	var listen, unix, exports multiFlag
	fs.Var(&listen, "listen", "TCP address to listen on, host:port (repeatable; default: the configuration file's, else :10809)")
	fs.Var(&unix, "unix", "Unix socket path to listen on (repeatable)")
	fs.Var(&exports, "export", "export NAME=PATH[,option…] (repeatable; see above)")
	fs.StringVar(&o.ConfigFile, "C", "", "nbd-server configuration file (INI, nbd-server(5))")
	fs.StringVar(&o.ConfigFile, "config", "", "same as -C")
	fs.StringVar(&o.TLSMode, "tls", "", "TLS: off, allow (clients may upgrade) or require (default: allow if a certificate is given, else off)")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "server certificate (PEM)")
	fs.StringVar(&o.TLSKey, "tls-key", "", "server private key (PEM)")
	fs.StringVar(&o.TLSClientCA, "tls-ca", "", "CA bundle (PEM) that client certificates must chain to; clients without one are refused")
	fs.IntVar(&o.MaxConnections, "max-connections", 0, fmt.Sprintf("bound on all connections (default %d)", nbdserver.DefaultMaxConnections))
	fs.DurationVar(&o.HandshakeTimeout, "handshake-timeout", 0, fmt.Sprintf("time a client has to finish negotiating (default %v)", nbdserver.DefaultHandshakeTimeout))
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", 0, fmt.Sprintf("on shutdown, how long to answer new requests with ESHUTDOWN before disconnecting (default %v; negative: disconnect once requests in flight are answered)", nbdserver.DefaultDrainTimeout))
	fs.IntVar(&o.MaxInFlight, "max-in-flight", 0, fmt.Sprintf("requests served at once per connection (default %d)", nbdserver.DefaultMaxInFlight))
	fs.BoolVar(&o.NoList, "no-list", false, "refuse to list exports (NBD_OPT_LIST)")
	fs.StringVar(&o.User, "user", "", "switch to this user after listening")
	fs.StringVar(&o.Group, "group", "", "switch to this group after listening")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), serveUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nbdroot serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if len(exports) == 0 && o.ConfigFile == "" {
		fmt.Fprintln(stderr, "nbdroot serve: nothing to serve: give --export NAME=PATH or -C CONFIG")
		return 2
	}
	o.Listen, o.Unix, o.Exports, o.Log = listen, unix, exports, stderr

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{})
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	if err := nbdserver.Run(ctx, o, reload); err != nil {
		fmt.Fprintf(stderr, "nbdroot serve: %v\n", err)
		return 1
	}
	return 0
}
