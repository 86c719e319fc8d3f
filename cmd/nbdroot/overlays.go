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
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

const overlaysUsage = `usage: nbdroot overlays list [--json] [--export NAME] [--client CLIENT]
       nbdroot overlays rm [--force] ID...
       nbdroot overlays reset [--force] [--export NAME] CLIENT

List and remove the copy-on-write overlays of nbdroot serve: each client's writes to a cow
export, kept on disk under a random overlay ID.

  list    every overlay: export, client, kind, whether a client is attached (and from
          where), disk space, creation and last use
  rm      remove overlays by ID (the full ID or its first 8 or more hex digits)
  reset   remove every overlay of CLIENT (on one export, with --export): its next boot
          starts from the image

CLIENT is a client identity (52:54:00:12:34:56) or @ADDRESS for a client that sent none.

When a server runs on the state directory, the commands go through its control socket
(STATE/control.sock): it knows who is attached, and --force disconnects the client of an
attached overlay before removing it — the client's keeper then fails loudly (the overlay
is gone) instead of attaching another view. Without a running server the commands work on
the directories themselves; an overlay some process holds (its lock is taken) is never
removed.

options:
  --state-dir DIR   the server's state directory (default /var/lib/nbdroot)
  --dir DIR         also look in DIR (repeatable): a cowdir= of a server whose state
                    directory did not record it
  --json            list: print JSON (full IDs, paths, sizes in bytes)
  --export NAME     only this export
  --client CLIENT   list: only this client
  --force           remove attached overlays too, disconnecting their clients
  -h, --help        print this help

exit status: 0 done; 1 an overlay could not be listed or removed; 2 the usage is wrong.
`

// runOverlays implements `nbdroot overlays`.
func runOverlays(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageError(stderr, "overlays", errors.New("give a command: list, rm or reset"))
	}
	sub := args[0]
	switch sub {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, overlaysUsage)
		return 0
	case "list", "rm", "reset":
	default:
		return usageError(stderr, "overlays", fmt.Errorf("unknown command %q: want list, rm or reset", sub))
	}
	fs := newCommandFlags("overlays " + sub)
	stateDir := fs.String("state-dir", nbdserver.DefaultStateDir, "")
	var dirs multiFlag
	fs.Var(&dirs, "dir", "")
	export := fs.String("export", "", "")
	clientFlag := fs.String("client", "", "")
	asJSON := fs.Bool("json", false, "")
	force := fs.Bool("force", false, "")
	pos, code := parseCommand(fs, args[1:], helpText(fs, overlaysUsage, false), stdout, stderr)
	if code >= 0 {
		return code
	}
	var err error
	for i, d := range dirs {
		if dirs[i], err = filepath.Abs(d); err != nil {
			return usageError(stderr, "overlays", fmt.Errorf("--dir %s: %w", d, err))
		}
	}
	var only *ovstore.Client
	if *clientFlag != "" {
		c, err := ovstore.ParseClient(*clientFlag)
		if err != nil {
			return usageError(stderr, "overlays", fmt.Errorf("--client %s: %w", *clientFlag, err))
		}
		only = &c
	}
	switch {
	case sub == "list" && len(pos) > 0:
		return usageError(stderr, "overlays", fmt.Errorf("list takes no arguments, got %q", pos[0]))
	case sub == "rm" && len(pos) == 0:
		return usageError(stderr, "overlays", errors.New("rm: give the IDs of the overlays to remove"))
	case sub == "reset" && len(pos) != 1:
		return usageError(stderr, "overlays", errors.New("reset: give exactly one CLIENT"))
	case sub != "list" && (*asJSON || only != nil):
		return usageError(stderr, "overlays", fmt.Errorf("--json and --client are for list; %s takes CLIENT or IDs as arguments", sub))
	case sub == "list" && *force:
		return usageError(stderr, "overlays", errors.New("--force is for rm and reset"))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, how := overlayAdmin(*stateDir, dirs)
	list, err := admin.List(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "nbdroot overlays: %v\n", err)
		if list == nil {
			return 1
		}
	}
	list = filterOverlays(list, *export, only)
	switch sub {
	case "list":
		if *asJSON {
			if list == nil {
				list = []nbdserver.OverlayInfo{}
			}
			b, _ := json.MarshalIndent(list, "", "  ")
			fmt.Fprintf(stdout, "%s\n", b)
		} else {
			printOverlays(stdout, list, how)
		}
		if err != nil {
			return 1
		}
		return 0
	case "rm":
		var targets []nbdserver.OverlayInfo
		for _, p := range pos {
			in, err := nbdserver.ResolveOverlay(list, strings.ToLower(p))
			if err != nil {
				fmt.Fprintf(stderr, "nbdroot overlays rm: %v\n", err)
				return 1
			}
			targets = append(targets, in)
		}
		return removeOverlays(ctx, admin, targets, *force, stdout, stderr)
	default: // reset
		c, err := ovstore.ParseClient(pos[0])
		if err != nil {
			return usageError(stderr, "overlays", fmt.Errorf("reset %s: %w", pos[0], err))
		}
		targets := filterOverlays(list, *export, &c)
		if len(targets) == 0 {
			where := ""
			if *export != "" {
				where = fmt.Sprintf(" on export %q", *export)
			}
			fmt.Fprintf(stdout, "client %s has no overlays%s: nothing to reset\n", c, where)
			return 0
		}
		return removeOverlays(ctx, admin, targets, *force, stdout, stderr)
	}
}

// overlayAdmin returns the running server's admin (through its control socket) when one
// answers there, else the state directory's; how says which, for the list header.
func overlayAdmin(stateDir string, dirs []string) (nbdserver.OverlayAdmin, string) {
	sock := filepath.Join(stateDir, nbdserver.ControlSocket)
	if c, err := nbdserver.DialControl(sock); err == nil {
		return c, "via the running server (" + sock + ")"
	}
	return nbdserver.LocalAdmin(stateDir, dirs...), "from " + stateDir + " (no server answers on " + sock + ")"
}

func filterOverlays(list []nbdserver.OverlayInfo, export string, c *ovstore.Client) []nbdserver.OverlayInfo {
	var out []nbdserver.OverlayInfo
	for _, in := range list {
		if export != "" && in.Export != export || c != nil && in.Client != *c {
			continue
		}
		out = append(out, in)
	}
	return out
}

func removeOverlays(ctx context.Context, admin nbdserver.OverlayAdmin, targets []nbdserver.OverlayInfo, force bool, stdout, stderr io.Writer) int {
	status := 0
	for _, in := range targets {
		if err := admin.Remove(ctx, in.ID, force); err != nil {
			fmt.Fprintf(stderr, "nbdroot overlays: %v\n", err)
			status = 1
			continue
		}
		fmt.Fprintf(stdout, "removed %s overlay %s of client %s on export %q\n", in.Kind, in.ID, in.Client, in.Export)
	}
	return status
}

func printOverlays(w io.Writer, list []nbdserver.OverlayInfo, how string) {
	if len(list) == 0 {
		fmt.Fprintf(w, "no overlays (%s)\n", how)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "OVERLAY\tEXPORT\tCLIENT\tKIND\tSTATE\tSIZE\tCREATED\tLAST USED")
	for _, in := range list {
		state := "detached"
		switch {
		case in.Err != "":
			state = "damaged: " + in.Err
		case len(in.From) > 0:
			state = "attached from " + strings.Join(in.From, ",")
		case in.Attached:
			state = "attached"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortID(in.ID), dash(in.Export), dash(in.Client.String()), dash(string(in.Kind)),
			state, nbd.FormatSize(uint64(in.Allocated)), when(in.Created), when(in.LastUsed))
	}
	tw.Flush()
	noun := "overlays"
	if len(list) == 1 {
		noun = "overlay"
	}
	fmt.Fprintf(w, "%d %s, %s\n", len(list), noun, how)
}

// shortID is the first 12 hex digits of an ID: enough to tell overlays apart and to pass
// to rm.
func shortID(id nbd.OverlayID) string { return id.String()[:12] }

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}
