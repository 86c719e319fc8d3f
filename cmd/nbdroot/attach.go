package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdclient"
)

const attachUsage = `usage: nbdroot attach SERVER[:PORT] [options]

Connect an NBD export to /dev/nbdN on this machine, through the kernel's netlink
interface (or its ioctl interface on kernels without it), and print the device.
SERVER is a name or an address (IPv6 in brackets with a port); PORT defaults to 10809.

options:
  --export NAME              the export (default: the server's default export)
  --device /dev/nbdN         the device (default: the first free one)
  --connections N            sockets to the server (default 1; more only when the server
                             advertises multi-conn)
  --timeout D                per-request timeout (default: the kernel's)
  --dead-conn-timeout D      how long I/O waits for a reconnect when the server goes away
                             (default 2m with --keep, none without)
  --block-size N             logical block size 512-4096 (default: the server's minimum)
  --keep                     start a keeper that reconnects when the server restarts
  --id ID                    this machine's identity for the server, which keys copy-on-write
                             overlays and its writer lock by it (1-64 of A-Z a-z 0-9 . _ : -;
                             default: the MAC address of the interface towards the server;
                             --id= sends none)
  --ioctl                    use the ioctl interface (it always starts a keeper)
  --tls-ca FILE              use TLS (NBD_OPT_STARTTLS), verifying the server's certificate
                             against the CA certificates in FILE (PEM)
  --tls-cert FILE, --tls-key FILE
                             this client's certificate and key, for servers that ask
  --tls require|on|off       require (the default with --tls-ca), use when the server
                             offers it, or never
  --tls-name NAME            the name the server's certificate must carry (default: SERVER)
  --no-ktls                  do not hand the TLS records to the kernel: the keeper relays
                             them (it always starts when a relay is needed)
  --json                     print the attachment as JSON
  -h, --help                 print this help

Durations are Go durations or seconds: 30, 30s, 2m.

exit status: 0 attached; 1 the attach failed (or the keeper did not start: the device then
stays attached); 2 the usage is wrong.

examples:
  nbdroot attach 192.168.0.1 --export root --keep
  nbdroot attach [fd00::1]:10900 --device /dev/nbd3 --connections 2
  nbdroot attach nbd.lab --export root --tls-ca ca.pem --tls-cert me.pem --tls-key me.key --keep
`

const detachUsage = `usage: nbdroot detach /dev/nbdN

Stop the device's keeper, if it has one, and disconnect the device (the kernel sends
NBD_CMD_DISC to the server). Unmount what is mounted from it first.

exit status: 0 detached; 1 the detach failed; 2 the usage is wrong.
`

const statusUsage = `usage: nbdroot status [--json] [--all] [/dev/nbdN]
       nbdroot status --server HOST:PORT | --state-dir DIR [--json]   (a server's clients)

Show this machine's connected NBD devices: size, block size, read-only, what they are
connected to, the process that connected them, and their keeper (server in use,
reconnects, state).

options:
  --json     print JSON
  --all      include devices that are not connected
  -h, --help print this help

exit status: 0 shown; 1 the kernel has no nbd driver or the device is unknown; 2 the usage
is wrong.
`

// identityFlag is --id: whether it was given (--id= is given, and empty: no identity).
type identityFlag struct {
	set bool
	id  string
}

// String implements flag.Value.
func (f *identityFlag) String() string { return f.id }

// Set implements flag.Value.
func (f *identityFlag) Set(s string) error { f.set, f.id = true, s; return nil }

// attachTimeout bounds `nbdroot attach`'s negotiation with its server.
const attachTimeout = 60 * time.Second

// runAttach implements `nbdroot attach`; `attach --run-keeper` is the keeper process it
// starts (argv[0] @nbdroot-keeper).
func runAttach(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "--run-keeper" {
		return nbdclient.KeeperMain()
	}
	fs := newCommandFlags("attach")
	r := nbdclient.Request{Device: -1, DialTimeout: attachTimeout,
		Keeper: nbdclient.KeeperStart{Args: []string{"attach", "--run-keeper"}},
		Log:    func(s string) { fmt.Fprintf(stderr, "nbdroot attach: %s\n", s) }}
	fs.StringVar(&r.Export, "export", "", "")
	device := fs.String("device", "", "")
	fs.IntVar(&r.Connections, "connections", 1, "")
	fs.Var(durationFlag{&r.Timeout, false}, "timeout", "")
	fs.Var(durationFlag{&r.DeadConnTimeout, false}, "dead-conn-timeout", "")
	fs.IntVar(&r.BlockSize, "block-size", 0, "")
	fs.BoolVar(&r.Keep, "keep", false, "")
	ioctl := fs.Bool("ioctl", false, "")
	asJSON := fs.Bool("json", false, "")
	var id identityFlag
	fs.Var(&id, "id", "")
	var tlsFlags attachTLSFlags
	tlsFlags.register(fs)
	pos, code := parseCommand(fs, args, helpText(fs, attachUsage, false), stdout, stderr)
	if code >= 0 {
		return code
	}
	var err error
	if len(pos) != 1 {
		return usageError(stderr, "attach", errors.New("give exactly one SERVER[:PORT]"))
	}
	srv, err := bootparam.ParseServer(pos[0])
	if err != nil {
		reason := err.Error()
		if pe := (*bootparam.ParamError)(nil); errors.As(err, &pe) {
			reason = pe.Reason
		}
		return usageError(stderr, "attach", fmt.Errorf("%q is not SERVER[:PORT]: %s", pos[0], reason))
	}
	r.Servers = []string{srv.String()}
	if *device != "" {
		if r.Device, err = nbdclient.DeviceNumber(*device); err != nil {
			return usageError(stderr, "attach", err)
		}
	}
	if *ioctl {
		r.Interface = nbdclient.InterfaceIoctl
	}
	if r.Connections < 1 || r.Connections > 64 {
		return usageError(stderr, "attach", fmt.Errorf("--connections %d: must be 1-64", r.Connections))
	}
	if r.BlockSize != 0 && (r.BlockSize < 512 || r.BlockSize > 4096 || r.BlockSize&(r.BlockSize-1) != 0) {
		return usageError(stderr, "attach", fmt.Errorf("--block-size %d: must be a power of two from 512 to 4096", r.BlockSize))
	}
	if r.TLS, err = tlsFlags.settings(); err != nil {
		return usageError(stderr, "attach", err)
	}
	switch {
	case !id.set:
		// The default: the machine as the server sees it, by the NIC that reaches it.
		mac, iface, err := nbdclient.RouteIdentity(r.Servers[0])
		if err != nil {
			fmt.Fprintf(stderr, "nbdroot attach: no client identity (%v): the server keys this client by its address; --id ID names it\n", err)
		} else {
			r.Identity = mac
			r.Log(fmt.Sprintf("client identity %s (the MAC address of %s)", mac, iface))
		}
	case id.id != "":
		if err := nbd.ValidateIdentity(id.id); err != nil {
			return usageError(stderr, "attach", fmt.Errorf("--id %q: %w", id.id, err))
		}
		r.Identity = id.id
	}
	a, err := nbdclient.Attach(context.Background(), r)
	if a == nil {
		fmt.Fprintf(stderr, "nbdroot attach: %v\n", err)
		return 1
	}
	if err == nil {
		err = a.KeeperReady()
	}
	for _, w := range a.Warnings {
		fmt.Fprintf(stderr, "nbdroot attach: warning: %s\n", w)
	}
	if a.TLS != "" {
		fmt.Fprintf(stderr, "nbdroot attach: %s: %s\n", a.Device, a.TLS)
	}
	if *asJSON {
		b, jerr := json.MarshalIndent(a, "", "  ")
		if jerr != nil {
			fmt.Fprintf(stderr, "nbdroot attach: %s is attached, but its description: %v\n", a.Device, jerr)
			return 1
		}
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		fmt.Fprintln(stdout, a.Device)
	}
	if err != nil {
		fmt.Fprintf(stderr, "nbdroot attach: %v\n", err)
		return 1
	}
	return 0
}

// runDetach implements `nbdroot detach`.
func runDetach(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("detach")
	pos, code := parseCommand(fs, args, helpText(fs, detachUsage, false), stdout, stderr)
	if code >= 0 {
		return code
	}
	var err error
	if len(pos) != 1 {
		return usageError(stderr, "detach", errors.New("give exactly one /dev/nbdN"))
	}
	idx, err := nbdclient.DeviceNumber(pos[0])
	if err != nil {
		return usageError(stderr, "detach", err)
	}
	if err := nbdclient.Detach(idx); err != nil {
		fmt.Fprintf(stderr, "nbdroot detach: %v\n", err)
		return 1
	}
	return 0
}

// runStatus implements `nbdroot status`.
func runStatus(args []string, stdout, stderr io.Writer) int {
	if wantsServerStatus(args) {
		return runServerStatus(args, stdout, stderr)
	}
	fs := newCommandFlags("status")
	asJSON := fs.Bool("json", false, "")
	all := fs.Bool("all", false, "")
	pos, code := parseCommand(fs, args, helpText(fs, statusUsage, false), stdout, stderr)
	if code >= 0 {
		return code
	}
	var err error
	if len(pos) > 1 {
		return usageError(stderr, "status", errors.New("give at most one device"))
	}
	only := -1
	if len(pos) == 1 {
		if only, err = nbdclient.DeviceNumber(pos[0]); err != nil {
			return usageError(stderr, "status", err)
		}
	}
	devs, err := nbdclient.Status(*all || only >= 0)
	if err != nil {
		fmt.Fprintf(stderr, "nbdroot status: %v\n", err)
		return 1
	}
	if only >= 0 {
		var one []nbdclient.DeviceInfo
		for _, d := range devs {
			if d.Index == only {
				one = append(one, d)
			}
		}
		if len(one) == 0 {
			fmt.Fprintf(stderr, "nbdroot status: /dev/nbd%d: no such NBD device\n", only)
			return 1
		}
		devs = one
	}
	if *asJSON {
		if devs == nil {
			devs = []nbdclient.DeviceInfo{}
		}
		b, err := json.MarshalIndent(devs, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "nbdroot status: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	printStatus(stdout, devs)
	return 0
}

func printStatus(w io.Writer, devs []nbdclient.DeviceInfo) {
	if len(devs) == 0 {
		fmt.Fprintln(w, "no connected NBD devices")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSTATE\tSIZE\tBLOCK\tBACKEND\tPID\tKEEPER")
	for _, d := range devs {
		state := "free"
		if d.Connected {
			state = "connected"
			if d.ReadOnly {
				state += ",ro"
			}
		}
		keeper := "-"
		if k := d.Keeper; k != nil {
			keeper = fmt.Sprintf("pid %d, %s via %s, %d reconnect(s)", k.Pid, k.State, k.Server, k.Reconnects)
			if k.LastError != "" {
				keeper += ", last error: " + k.LastError
			}
		}
		backend, pid := dash(d.Backend), "-"
		if d.Pid > 0 {
			pid = fmt.Sprint(d.Pid)
		}
		size, block := "-", "-"
		if d.Connected {
			size, block = nbd.FormatSize(d.Size), fmt.Sprint(d.BlockSize)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Device, state, size, block, backend, pid, keeper)
	}
	tw.Flush()
}

func dash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
