package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver"
)

const serverStatusUsage = `usage: nbdroot status --server HOST:PORT [--json]
       nbdroot status --state-dir DIR [--json]

Show a running nbdroot server's exports and clients: each client's identity (or @ADDRESS
for one that sent none), where it connects from, its connections, its copy-on-write
overlay, bytes read and written, reconnects and last activity. Clients that disconnected
stay listed for a day.

  --server HOST:PORT  the server's metrics listener (nbdroot serve --metrics HOST:PORT)
  --state-dir DIR     the server's state directory, through its control socket
                      (DIR/control.sock; the default state directory is /var/lib/nbdroot)
  --json              print JSON
  -h, --help          print this help

exit status: 0 shown; 1 the server did not answer; 2 the usage is wrong.
`

// wantsServerStatus says whether `nbdroot status` arguments ask about a server rather than
// this machine's NBD devices.
func wantsServerStatus(args []string) bool {
	for _, a := range args {
		for _, f := range []string{"-server", "--server", "-state-dir", "--state-dir"} {
			if a == f || strings.HasPrefix(a, f+"=") {
				return true
			}
		}
	}
	return false
}

// runServerStatus implements `nbdroot status --server` and `nbdroot status --state-dir`.
func runServerStatus(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("status")
	server := fs.String("server", "", "")
	stateDir := fs.String("state-dir", "", "")
	asJSON := fs.Bool("json", false, "")
	pos, code := parseCommand(fs, args, helpText(fs, serverStatusUsage, false), stdout, stderr)
	if code >= 0 {
		return code
	}
	var err error
	switch {
	case len(pos) > 0:
		return usageError(stderr, "status", fmt.Errorf("unexpected argument %q (a device is for this machine's status, without --server)", pos[0]))
	case (*server == "") == (*stateDir == ""):
		return usageError(stderr, "status", errors.New("give either --server HOST:PORT or --state-dir DIR"))
	}
	var c *nbdserver.ControlClient
	if *server != "" {
		c = nbdserver.StatusClient(*server)
	} else {
		sock := filepath.Join(*stateDir, nbdserver.ControlSocket)
		if c, err = nbdserver.DialControl(sock); err != nil {
			fmt.Fprintf(stderr, "nbdroot status: no server answers on %s: %v\n", sock, err)
			return 1
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "nbdroot status: %v\n", err)
		return 1
	}
	if *asJSON {
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	printServerStatus(stdout, st, time.Now())
	return 0
}

func printServerStatus(w io.Writer, st nbdserver.Status, now time.Time) {
	fmt.Fprintf(w, "server up since %s (%s), state directory %s\n\n", when(st.Started), ago(now, st.Started), st.StateDir)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "EXPORT\tCONNECTIONS\tWHAT")
	for _, e := range st.Exports {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", e.Name, e.Connections, e.Description)
	}
	tw.Flush()
	fmt.Fprintln(w)
	if len(st.Clients) == 0 {
		fmt.Fprintln(w, "no clients")
		return
	}
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "EXPORT\tCLIENT\tFROM\tCONNS\tOVERLAY\tREAD\tWRITTEN\tRECONNECTS\tLAST ACTIVITY")
	for _, c := range st.Clients {
		overlay := "-"
		if c.Overlay != "" {
			overlay = fmt.Sprintf("%s (%s, %s)", c.Overlay[:12], c.OverlayKind, nbd.FormatSize(uint64(c.OverlayBytes)))
		}
		from := "-"
		if len(c.From) > 0 {
			from = strings.Join(c.From, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s\n", c.Export, c.Client, from, c.Connections, overlay,
			nbd.FormatSize(c.ReadBytes), nbd.FormatSize(c.WrittenBytes), c.Reconnects, ago(now, c.LastActivity))
	}
	tw.Flush()
}

// ago says how long before now t was, for people: "3s ago", "2h5m ago".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "now"
	case d < time.Hour:
		return d.Round(time.Second).String() + " ago"
	}
	return d.Round(time.Minute).String() + " ago"
}
