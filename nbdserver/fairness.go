package nbdserver

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Fairness between a client copying a large file and the others. Every connection has a
// goroutine of its own, but the runtime runs them on a few OS threads, and the kernel's
// scheduler — which decides who gets a CPU when the machine is busy — sees only those.
// A copy keeps its thread busy with sends of megabytes; the booting clients' small
// requests then wait for that thread's time slice to end (the kernel gives a thread that
// sleeps between requests an edge, but the runtime's threads never sleep long). Measured
// on 2 CPUs, a full-speed copy multiplied the boots' p99 latency by five or six.
//
// So a connection that streams — more than bulkBytes within bulkWindow — is a bulk
// transfer, and while other connections are active its large reads are sent from OS
// threads of their own that run at a lower CPU priority (bulkNice): the kernel then runs
// the others first. The copy loses only what the others use; alone, or against other
// copies, it runs at full speed. This covers file exports on plain sockets (sendfile);
// their large reads are what copies are made of.
const (
	bulkWindow = 250 * time.Millisecond
	bulkBytes  = 32 << 20 // 128 MiB/s: far beyond a booting client's pace
	// othersRecent is how recently another connection must have been served for a
	// bulk transfer to yield to it.
	othersRecent = 20 * time.Millisecond
	// bulkNice is the nice value of the bulk senders' threads: a weight of about a tenth
	// of a normal thread's (sched(7)).
	bulkNice = 10
	// bulkThreads is the number of bulk sender threads; bulk connections queue for them.
	bulkThreads = 2
)

// bulkMeter tells a connection whether it is a bulk transfer, from the bytes it read.
type bulkMeter struct {
	limit int64 // bytes per bulkWindow that make a bulk transfer (bulkBytes; tests lower it)
	start time.Time
	bytes int64
	bulk  bool
}

// add counts n bytes read at now and reports whether the connection is a bulk transfer:
// it read more than limit in the last whole window (or so far in this one).
func (m *bulkMeter) add(n int64, now time.Time) bool {
	if now.Sub(m.start) >= bulkWindow {
		m.bulk = m.bytes >= m.limit && now.Sub(m.start) < 2*bulkWindow
		m.start, m.bytes = now, 0
	}
	m.bytes += n
	if m.bytes >= m.limit {
		m.bulk = true
	}
	return m.bulk
}

// activity records when a connection other than a bulk transfer was last served.
type activity struct{ last atomic.Int64 }

func (a *activity) note(now time.Time) { a.last.Store(now.UnixNano()) }

// recent reports whether some connection that is not a bulk transfer was served within
// othersRecent of now.
func (a *activity) recent(now time.Time) bool {
	return now.UnixNano()-a.last.Load() < int64(othersRecent)
}

// bulkSender runs jobs — sends of bulk transfers — on bulkThreads OS threads of lower CPU
// priority. The threads are the goroutines' own (runtime.LockOSThread) for as long as the
// sender runs, so their priority never touches another goroutine; they end with stop.
type bulkSender struct {
	once sync.Once
	jobs chan *bulkJob
	wg   sync.WaitGroup
}

type bulkJob struct {
	fn   func() error
	done chan error
}

var bulkJobPool = sync.Pool{New: func() any { return &bulkJob{done: make(chan error, 1)} }}

// run runs fn on a bulk sender thread and returns its error.
func (b *bulkSender) run(fn func() error) error {
	b.once.Do(b.start)
	j := bulkJobPool.Get().(*bulkJob)
	j.fn = fn
	b.jobs <- j
	err := <-j.done
	j.fn = nil
	bulkJobPool.Put(j)
	return err
}

func (b *bulkSender) start() {
	b.jobs = make(chan *bulkJob)
	for i := 0; i < bulkThreads; i++ {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			// Locked for good: when this goroutine ends, the runtime ends its thread too,
			// so the lowered priority never serves anything else.
			runtime.LockOSThread()
			lowerThreadPriority(bulkNice)
			for j := range b.jobs {
				j.done <- j.fn()
			}
		}()
	}
}

// stop ends the sender threads, if they were started; run must not be called after it.
func (b *bulkSender) stop() {
	b.once.Do(func() {}) // a sender never started stays so
	if b.jobs != nil {
		close(b.jobs)
		b.wg.Wait()
	}
}
