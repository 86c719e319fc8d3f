package storm

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Usage is what a server process (and, for servers that fork per client, its children)
// has used, from /proc.
type Usage struct {
	// CPU is user+system time of the process and its threads, plus that of children it
	// has reaped and, with children, of its live children.
	CPU time.Duration
	// RSS is the resident memory now; Anon its anonymous part (heap, stacks: what the
	// server allocated, as opposed to mapped file pages that belong to the page cache).
	// With children both are proportional set sizes (Pss), so pages shared after a fork
	// count once.
	RSS, Anon int64
	// Peak is the process's own high-water mark of RSS (VmHWM); 0 with children, where
	// only sampling (Sampler) finds a peak.
	Peak int64
	// Procs is the number of processes measured.
	Procs int
}

// clockTick is USER_HZ, the unit of times in /proc/PID/stat: 100 on every Linux ABI.
const clockTick = 100

// ProcUsage measures process pid; with children, its live child processes too.
func ProcUsage(pid int, children bool) (Usage, error) {
	var u Usage
	cpu, _, err := statTimes(pid, true)
	if err != nil {
		return u, err
	}
	u.CPU, u.Procs = cpu, 1
	if !children {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return u, err
		}
		f := statusFields(st)
		u.RSS, u.Anon, u.Peak = f["VmRSS"], f["RssAnon"], f["VmHWM"]
		return u, nil
	}
	pids := []int{pid}
	ents, _ := filepath.Glob("/proc/[0-9]*")
	for _, e := range ents {
		p, err := strconv.Atoi(filepath.Base(e))
		if err != nil || p == pid {
			continue
		}
		cpu, pp, err := statTimes(p, false)
		if err != nil || pp != pid {
			continue
		}
		u.CPU += cpu
		u.Procs++
		pids = append(pids, p)
	}
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p))
		if err != nil {
			continue // exited meanwhile
		}
		f := statusFields(b)
		u.RSS += f["Pss"]
		u.Anon += f["Pss_Anon"]
	}
	return u, nil
}

// statTimes reads the CPU time and parent of a process from /proc/PID/stat; with reaped,
// the times of children it waited for are included.
func statTimes(pid int, reaped bool) (time.Duration, int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may contain spaces and parentheses: fields are counted
	// from the last ')'. Then: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	n := 2
	if reaped {
		n = 4
	}
	var ticks int64
	for _, s := range f[11 : 11+n] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTick, ppid, nil
}

// statusFields parses "Key:   123 kB" lines (status, smaps_rollup) into bytes.
func statusFields(b []byte) map[string]int64 {
	m := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err == nil {
			m[k] = n << 10
		}
	}
	return m
}

// Sampler polls ProcUsage in the background and keeps the largest RSS and Anon seen: the
// peak for servers without a high-water mark of their own (forking ones), and the peak of
// anonymous memory for all.
type Sampler struct {
	pid      int
	children bool
	stop     chan struct{}
	done     chan struct{}

	mu         sync.Mutex
	peak, anon int64
}

// StartSampler samples pid every interval until Stop.
func StartSampler(pid int, children bool, interval time.Duration) *Sampler {
	s := &Sampler{pid: pid, children: children, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *Sampler) sample() {
	u, err := ProcUsage(s.pid, s.children)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.peak, s.anon = max(s.peak, u.RSS, u.Peak), max(s.anon, u.Anon)
	s.mu.Unlock()
}

// Stop takes a last sample and returns the peaks: RSS (or Pss for a process tree), and
// anonymous memory.
func (s *Sampler) Stop() (peak, anon int64) {
	close(s.stop)
	<-s.done
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.anon
}
