package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/nbdroot/nbdroot/nbdserver"
	"github.com/nbdroot/nbdroot/netboot"
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
  nbdroot serve --export root=s3://images/debian.img,cow   (an image in object storage)

Each listener prints "listening on ADDR" once it accepts connections (port 0 → a free port).
systemd socket activation (LISTEN_FDS) replaces the listeners. SIGHUP re-reads the
configuration without dropping connections; SIGTERM or SIGINT shut down gracefully.

--export NAME=PATH[,option…] options:
  readonly, ro       refuse writes
  cow                each client (by identity) writes to its own overlay; the image is
                     never written. Overlays are files in --state-dir: a restart loses
                     nothing flushed, a reconnecting client resumes its own, a fresh boot
                     gets a new one; unused ones go after --overlay-grace
  cowdir=DIR         persistent overlays in DIR (or s3://BUCKET/PREFIX): a client keeps
                     its overlay across boots
  cowtmp=DIR         temporary overlays in DIR (or s3://…) instead of --state-dir
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

Images in S3-compatible object storage (docs/store.md): PATH s3://BUCKET/KEY is read with
ranged GETs through a memory cache (--s3-cache); overlays of cow exports and the writes of
a read-write export live in the store beside it (KEY.nbdroot/), so any server sharing the
store can serve any client after a failover; a lease in the store keeps two servers from
serving one writer. The store is found the standard ways: AWS_ENDPOINT_URL_S3 or
AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN,
AWS_PROFILE and ~/.aws/{config,credentials}; the --s3-* flags override them.

Network boot (opt-in; docs/netboot.md): --http serves each export's iPXE script at
http://ADDR:PORT/EXPORT/boot.ipxe (/boot.ipxe for the default export) with the newest
/boot/vmlinuz-VERSION and /boot/nbdroot.img-VERSION read from the export's image; --tftp and
--dhcp boot ROMs that speak nothing else, beside the network's DHCP server (proxy) or as
the only one (full):

  nbdroot serve --export root=/srv/root.img --http :8080
  nbdroot serve --export root=/srv/root.img --http 10.0.0.1:8080 --tftp 10.0.0.1 \
                --dhcp proxy --dhcp-interface eth0

options:
`

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("serve")
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
	fs.IntVar(&o.MaxClientConnections, "max-client-connections", 0, fmt.Sprintf("bound on the connections of one client address or identity (default %d)", nbdserver.DefaultMaxClientConnections))
	durationVar(fs, &o.HandshakeTimeout, "handshake-timeout", false, fmt.Sprintf("time a client has to finish negotiating (default %v)", nbdserver.DefaultHandshakeTimeout))
	durationVar(fs, &o.DrainTimeout, "drain-timeout", true, fmt.Sprintf("on shutdown, how long to answer new requests with ESHUTDOWN before disconnecting (default %v; negative: disconnect once requests in flight are answered)", nbdserver.DefaultDrainTimeout))
	fs.IntVar(&o.MaxInFlight, "max-in-flight", 0, fmt.Sprintf("requests served at once per connection (default %d)", nbdserver.DefaultMaxInFlight))
	fs.BoolVar(&o.NoList, "no-list", false, "refuse to list exports (NBD_OPT_LIST)")
	fs.StringVar(&o.StateDir, "state-dir", nbdserver.DefaultStateDir, "state `DIR`: temporary cow overlays and the control socket of nbdroot overlays/status")
	durationVar(fs, &o.OverlayGrace, "overlay-grace", false, fmt.Sprintf("keep a temporary cow overlay this long after its client's last connection closed (default %v)", nbdserver.DefaultOverlayGrace))
	fs.StringVar(&o.Metrics, "metrics", "", "serve Prometheus metrics (/metrics) and the server status (/status) over HTTP at `ADDR:PORT`")
	fs.BoolVar(&o.Strict, "strict", false, "refuse to start when an export's image is missing (default: log it, skip the export, serve the others, as nbd-server does)")
	fs.StringVar(&o.S3Endpoint, "s3-endpoint", "", "object store `URL` for s3:// exports (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's endpoint_url, else AWS S3)")
	fs.StringVar(&o.S3Region, "s3-region", "", "object store region (default: AWS_REGION, the profile's, else us-east-1)")
	fs.StringVar(&o.S3Profile, "s3-profile", "", "`PROFILE` of ~/.aws/config and ~/.aws/credentials (default: AWS_PROFILE)")
	fs.StringVar(&o.S3CredentialsFile, "s3-credentials", "", "shared credentials `FILE` (INI, as ~/.aws/credentials) instead of the default one")
	fs.StringVar(&o.S3CacheSize, "s3-cache", "", "memory for the image block cache, e.g. 512M or 2G (default 512M)")
	durationVar(fs, &o.S3LeaseTTL, "s3-lease-ttl", false, "how long a writer's lease outlives its server's last renewal: the failover wait after a server dies, and the longest store outage writes ride out (default 30s; 1s to 1h)")
	fs.BoolVar(&o.S3VirtualHost, "s3-virtual-host", false, "address buckets as BUCKET.ENDPOINT with a custom endpoint (default: ENDPOINT/BUCKET)")
	fs.StringVar(&o.User, "user", "", "switch to this user after listening")
	fs.StringVar(&o.Group, "group", "", "switch to this group after listening")
	var nb netboot.Config
	var dns, sources multiFlag
	fs.StringVar(&nb.HTTP, "http", "", "serve iPXE boot scripts and kernels over HTTP at `ADDR:PORT`")
	fs.StringVar(&nb.TFTP, "tftp", "", "serve boot ROMs over TFTP at `ADDR[:PORT]` (port 69 by default)")
	fs.StringVar(&nb.DHCP, "dhcp", "", "answer PXE clients: proxy (beside the network's DHCP server) or full (the only DHCP server)")
	fs.StringVar(&nb.DHCPInterface, "dhcp-interface", "", "the `IFACE` PXE clients boot on (with --dhcp)")
	fs.StringVar(&nb.DHCPRange, "dhcp-range", "", "addresses `FIRST-LAST` full DHCP hands out")
	fs.StringVar(&nb.DHCPRouter, "dhcp-router", "", "default gateway full DHCP hands out")
	fs.Var(&dns, "dhcp-dns", "DNS server full DHCP hands out (repeatable)")
	fs.StringVar(&nb.Loader, "pxe-loader", "", "what TFTP-only ROMs load: ipxe (chain to iPXE, then HTTP) or pxelinux (BIOS, kernels over TFTP as in the seed) (default ipxe)")
	fs.StringVar(&nb.IPXEDir, "ipxe-dir", "", "`DIR` with undionly.kpxe and snponly.efi (default "+netboot.DefaultIPXEDir+", Debian's ipxe package)")
	fs.StringVar(&nb.PXELinuxDir, "pxelinux-dir", "", "`DIR` with pxelinux.0 and ldlinux.c32 (default: Debian's pxelinux and syslinux-common)")
	fs.StringVar(&nb.BootExport, "boot-export", "", "the export PXE clients boot (default: the default export)")
	fs.StringVar(&nb.NBDServer, "boot-nbd", "", "NBD address `HOST:PORT` boot command lines name (default: the address the client reached this server at, with the NBD listener's port)")
	fs.StringVar(&nb.BootURL, "boot-url", "", "base `URL` http://HOST:PORT of the scripts DHCP hands to iPXE (default: this server on --dhcp-interface, --http's port)")
	fs.StringVar(&nb.Append, "boot-append", "", "kernel parameters added to every boot command line (e.g. console=ttyS0)")
	fs.Var(&sources, "boot-source", "`EXPORT=PATH`: read the export's kernels from PATH, an image or directory, instead of its own image (a LUKS root; repeatable)")
	pos, code := parseCommand(fs, args, helpText(fs, serveUsage, true), stdout, stderr)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, "serve", fmt.Errorf("unexpected argument %q", pos[0]))
	}
	if len(exports) == 0 && o.ConfigFile == "" {
		fmt.Fprintln(stderr, "nbdroot serve: nothing to serve: give --export NAME=PATH or -C CONFIG")
		return 2
	}
	for _, l := range listen {
		if err := checkListen(l); err != nil {
			return usageError(stderr, "serve", fmt.Errorf("--listen %q: %w", l, err))
		}
	}
	o.Listen, o.Unix, o.Exports, o.Log = listen, unix, exports, stderr
	// systemd sets JOURNAL_STREAM when standard error goes to journald (systemd.exec(5)).
	o.Journal = os.Getenv("JOURNAL_STREAM") != ""
	nb.DHCPDNS = dns
	for _, src := range sources {
		name, p, ok := strings.Cut(src, "=")
		if !ok || name == "" || p == "" {
			fmt.Fprintf(stderr, "nbdroot serve: --boot-source %q: want EXPORT=PATH\n", src)
			return 2
		}
		if nb.Sources == nil {
			nb.Sources = map[string]string{}
		}
		nb.Sources[name] = p
	}
	if nb.Enabled() {
		nb.Log = log.New(stderr, "", nbdserver.LogFlags(o.Journal))
		srv, err := netboot.New(nb)
		if err != nil {
			fmt.Fprintf(stderr, "nbdroot serve: %v\n", err)
			return 2
		}
		o.Companion = srv
	} else if nb.DHCPInterface != "" || len(sources) > 0 || nb.Append != "" || nb.BootExport != "" {
		fmt.Fprintln(stderr, "nbdroot serve: the --boot-*/--dhcp-* options need --http, --tftp or --dhcp")
		return 2
	}

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

// checkListen checks a --listen address before anything is opened, so the error names the
// flag rather than coming from deep inside net.Listen.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want HOST:PORT (:PORT for every address, [::1]:PORT for IPv6)")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q must be a number from 0 to 65535 (0: a free port)", port)
	}
	return nil
}
