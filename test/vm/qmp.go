package vm

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"
)

// qmpPath is the QMP socket of a guest started with Options.QMP.
func qmpPath(dir string) string { return filepath.Join(dir, "qmp.sock") }

// qmp is a connection to QEMU's machine protocol.
type qmp struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialQMP connects and leaves the capabilities negotiation mode.
func dialQMP(path string) (*qmp, error) {
	var conn net.Conn
	var err error
	for i := 0; i < 50; i++ {
		if conn, err = net.Dial("unix", path); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("QMP socket: %w", err)
	}
	q := &qmp{conn: conn, r: bufio.NewReader(conn)}
	if _, err := q.r.ReadBytes('\n'); err != nil { // the greeting
		conn.Close()
		return nil, fmt.Errorf("QMP greeting: %w", err)
	}
	if err := q.execute("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// execute runs a command and waits for its answer, skipping events.
func (q *qmp) execute(cmd string, args any) error {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	q.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("QMP %s: %w", cmd, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("QMP %s: %w", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class, Desc string
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return fmt.Errorf("QMP %s: %w", cmd, err)
		}
		if resp.Error != nil {
			return fmt.Errorf("QMP %s: %s: %s", cmd, resp.Error.Class, resp.Error.Desc)
		}
		if resp.Return != nil {
			return nil
		}
	}
}

// SendKeys presses keys on the guest's keyboard through QEMU's input layer (QMP
// send-key), the way a person types on the client: each argument is one chord of QEMU key
// codes held together ("shift-y", "e", "ret"), released before the next. Unlike Send, the
// characters this produces depend on the guest's keymap. The guest needs Options.QMP.
func (v *VM) SendKeys(chords ...string) {
	v.t.Helper()
	if v.qmpDir == "" {
		v.t.Fatal("SendKeys needs a guest started with Options.QMP")
	}
	if v.qmp == nil {
		q, err := dialQMP(qmpPath(v.qmpDir))
		if err != nil {
			v.t.Fatal(err)
		}
		v.qmp = q
	}
	for _, c := range chords {
		var keys []map[string]string
		for _, k := range strings.Split(c, "-") {
			keys = append(keys, map[string]string{"type": "qcode", "data": k})
		}
		if err := v.qmp.execute("send-key", map[string]any{"keys": keys, "hold-time": 50}); err != nil {
			v.t.Fatal(err)
		}
		// send-key returns before the release: let the guest take each chord in turn.
		time.Sleep(120 * time.Millisecond)
	}
}
