package nbdserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver/objstore"
)

// Options are the settings of `nbdroot serve`, from its flags. Flags add to and override what
// an nbd-server configuration file (ConfigFile) says.
type Options struct {
	Listen     []string // TCP addresses (host:port); port 0 picks a free one
	Unix       []string // Unix socket paths
	Exports    []string // --export specs, see ParseExport
	ConfigFile string   // nbd-server INI file (-C)

	TLSMode         string // "off", "allow", "require"; "" means the file's choice or off
	TLSCert, TLSKey string
	TLSClientCA     string // verify client certificates against this CA bundle
	MaxConnections  int
	// MaxClientConnections is Config.MaxClientConnections.
	MaxClientConnections int
	HandshakeTimeout     time.Duration
	DrainTimeout         time.Duration
	MaxInFlight          int
	NoList               bool
	User, Group          string

	// StateDir is the server's state directory (Config.StateDir; default DefaultStateDir);
	// its control socket, for `nbdroot overlays` and `nbdroot status`, is opened there.
	StateDir string
	// OverlayGrace is Config.OverlayGrace.
	OverlayGrace time.Duration
	// Metrics is a TCP address for an HTTP listener serving Prometheus metrics at
	// /metrics and the server's Status at /status; empty: none.
	Metrics string

	// The object store of s3:// exports (StoreConfig): endpoint, region, profile and
	// credentials file override the environment; CacheSize ("512M", "2G") bounds the block
	// cache; LeaseTTL is the writers' lease time; VirtualHost asks for BUCKET.ENDPOINT
	// requests.
	S3Endpoint, S3Region, S3Profile, S3CredentialsFile string
	S3CacheSize                                        string
	S3LeaseTTL                                         time.Duration
	S3VirtualHost                                      bool

	// Log receives the server's log lines (one per connection and handshake outcome) and
	// the "listening on ADDR" line for each listener.
	Log io.Writer

	// Strict refuses to start (or to reload) when an export's image is missing, instead of
	// logging it and serving the others.
	Strict bool
	// Journal says journald reads Log, which stamps each line: no time is added.
	Journal bool

	// Companion, when set, serves beside the NBD server and follows its configuration
	// (netboot's HTTP, TFTP and DHCP servers).
	Companion Companion
}

// Companion is something Run serves beside the NBD server. Run calls Start once the NBD
// listeners are open and before privileges are dropped (so it may bind ports below 1024),
// Reload with the exports of each configuration a reload applies, and Close when the
// server has shut down.
type Companion interface {
	// Start starts serving; exports are the configuration's, nbd the NBD listeners (whose
	// addresses tell clients where the NBD server is). Its own sockets are opened before
	// it returns.
	Start(exports []Export, nbd []net.Listener) error
	// Reload replaces the exports.
	Reload(exports []Export)
	// Close stops serving and waits until it has.
	Close() error
}

// Plan is a loaded configuration: the server Config and where to listen.
type Plan struct {
	Config      Config
	TCP         []string
	Unix        []string
	User, Group string
	Warnings    []string
	// LogFile is the configuration file's logfile: the log goes there instead of Options.Log.
	LogFile string
}

// Load builds the Plan from the configuration file (if any) and the flags.
func (o *Options) Load() (*Plan, error) {
	p := &Plan{}
	var sf *ServerFile
	if o.ConfigFile != "" {
		var err error
		if sf, err = LoadServerFile(o.ConfigFile); err != nil {
			return nil, err
		}
		p.Warnings = sf.Warnings
		p.Config.Exports = sf.Exports
		p.Config.DenyList = !sf.AllowList
		p.Config.MaxConnections = sf.MaxConnections
		p.User, p.Group = sf.User, sf.Group
		p.LogFile = sf.LogFile
		if sf.UnixSocket != "" {
			p.Unix = append(p.Unix, sf.UnixSocket)
		}
		if sf.UnixSocket == "" || sf.DualListen {
			if len(sf.ListenAddrs) == 0 {
				p.TCP = append(p.TCP, net.JoinHostPort("", sf.Port))
			}
			for _, a := range sf.ListenAddrs {
				p.TCP = append(p.TCP, net.JoinHostPort(a, sf.Port))
			}
		}
	}
	for _, spec := range o.Exports {
		e, err := ParseExport(spec)
		if err != nil {
			return nil, err
		}
		if !filepath.IsAbs(e.Path) && !objstore.IsURL(e.Path) {
			abs, err := filepath.Abs(e.Path)
			if err != nil {
				return nil, err
			}
			e.Path = abs
		}
		if e.CowDir != "" && !filepath.IsAbs(e.CowDir) && !objstore.IsURL(e.CowDir) {
			abs, err := filepath.Abs(e.CowDir)
			if err != nil {
				return nil, err
			}
			e.CowDir = abs
		}
		p.Config.Exports = append(p.Config.Exports, e)
	}
	// Flags replace the file's listeners rather than adding to them: `-C file --listen x`
	// means "that configuration, but here".
	if len(o.Listen) > 0 || len(o.Unix) > 0 {
		p.TCP, p.Unix = o.Listen, o.Unix
	}
	if len(p.TCP) == 0 && len(p.Unix) == 0 {
		p.TCP = []string{net.JoinHostPort("", strconv.Itoa(nbd.DefaultPort))}
	}
	if o.NoList {
		p.Config.DenyList = true
	}
	if o.MaxConnections > 0 {
		p.Config.MaxConnections = o.MaxConnections
	}
	if o.StateDir != "" {
		abs, err := filepath.Abs(o.StateDir)
		if err != nil {
			return nil, err
		}
		p.Config.StateDir = abs
	}
	p.Config.OverlayGrace = o.OverlayGrace
	if o.MaxClientConnections > 0 {
		p.Config.MaxClientConnections = o.MaxClientConnections
	}
	p.Config.Store = StoreConfig{Config: objstore.Config{Endpoint: o.S3Endpoint, Region: o.S3Region, Profile: o.S3Profile,
		CredentialsFile: o.S3CredentialsFile, VirtualHost: o.S3VirtualHost}, LeaseTTL: o.S3LeaseTTL}
	if o.S3CacheSize != "" {
		n, err := objstore.ParseSize(o.S3CacheSize)
		if err != nil {
			return nil, fmt.Errorf("--s3-cache: %w", err)
		}
		p.Config.Store.CacheSize = n
	}
	if o.S3LeaseTTL < 0 || o.S3LeaseTTL > 0 && o.S3LeaseTTL < time.Second || o.S3LeaseTTL > objstore.MaxLeaseTTL {
		return nil, fmt.Errorf("--s3-lease-ttl %v: want 1s to %v", o.S3LeaseTTL, objstore.MaxLeaseTTL)
	}
	p.Config.HandshakeTimeout = o.HandshakeTimeout
	p.Config.DrainTimeout = o.DrainTimeout
	p.Config.MaxInFlight = o.MaxInFlight
	if o.User != "" || o.Group != "" {
		p.User, p.Group = o.User, o.Group
	}

	cert, key, ca, mode := o.TLSCert, o.TLSKey, o.TLSClientCA, o.TLSMode
	if sf != nil {
		if cert == "" && key == "" {
			cert, key = sf.CertFile, sf.KeyFile
			if cert == "" {
				cert = key // nbd-server(5): the certificate may sit in the key file
			}
		}
		if ca == "" {
			ca = sf.CACertFile
		}
		if mode == "" && key != "" {
			mode = "allow"
			if sf.ForceTLS {
				mode = "require"
			}
		}
	}
	if mode == "" {
		mode = "off"
		if cert != "" {
			mode = "allow"
		}
	}
	m, err := ParseTLSMode(mode)
	if err != nil {
		return nil, err
	}
	p.Config.TLSMode = m
	if m != TLSOff {
		if cert == "" || key == "" {
			return nil, fmt.Errorf("--tls=%s needs --tls-cert and --tls-key", mode)
		}
		if p.Config.TLS, err = LoadTLS(cert, key, ca); err != nil {
			return nil, err
		}
	}
	if err := p.Config.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// LoadTLS builds the server TLS configuration: a certificate and key (PEM), and optionally a
// CA bundle that client certificates must chain to. TLS 1.2 is the floor (proto.md "TLS
// versions").
func LoadTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("TLS client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS client CA %s: no certificates found", clientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Listen opens the plan's listeners, or takes systemd's (socket activation) when there are
// any. A stale Unix socket left by a crashed server is replaced; a live one is an error.
func (p *Plan) Listen() ([]net.Listener, error) {
	lns, err := ActivationListeners()
	if err != nil || len(lns) > 0 {
		return lns, err
	}
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
	}
	for _, a := range p.TCP {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			closeAll()
			return nil, err
		}
		lns = append(lns, ln)
	}
	for _, path := range p.Unix {
		ln, err := listenUnix(path)
		if err != nil {
			closeAll()
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// listenUnix listens on a Unix socket path. A stale socket left by a crashed process is
// replaced; one that a live process answers on is an error.
func listenUnix(path string) (net.Listener, error) {
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another server is listening there", path)
		}
		os.Remove(path)
	}
	return net.Listen("unix", path)
}

// Run is `nbdroot serve`: it loads the configuration, listens, serves until ctx is cancelled
// (SIGTERM), then shuts down gracefully — answering what was received, flushing every image
// — and returns nil. Each value on reload (SIGHUP) re-reads the configuration and applies
// it without dropping connections; a bad new configuration is logged and the old one kept.
func Run(ctx context.Context, o Options, reload <-chan struct{}) error {
	setProcs()
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	plan, err := o.Load()
	if err != nil {
		return err
	}
	logger, closeLog, err := plan.openLog(o)
	if err != nil {
		return err
	}
	defer closeLog()
	for _, w := range plan.Warnings {
		logger.Printf("warning: %s", w)
	}
	var temps temporaryImages
	defer temps.Close()
	if err := temps.apply(plan.Config.Exports); err != nil {
		return err
	}
	skipped, err := plan.skipBroken(o.Strict)
	if err != nil {
		return err
	}
	for _, err := range skipped {
		logger.Printf("%v: skipped, serving the others (--strict refuses to start)", err)
	}
	lns, err := plan.Listen()
	if err != nil {
		return err
	}
	var metricsLn net.Listener
	if o.Metrics != "" {
		// Before dropping privileges, like the NBD listeners.
		if metricsLn, err = net.Listen("tcp", o.Metrics); err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("--metrics: %w", err)
		}
	}
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
		if metricsLn != nil {
			metricsLn.Close()
		}
	}
	if o.Companion != nil {
		if err := o.Companion.Start(plan.Config.Exports, lns); err != nil {
			closeAll()
			return err
		}
		defer o.Companion.Close()
	}
	if err := DropPrivileges(plan.User, plan.Group); err != nil {
		closeAll()
		return err
	}
	cfg := plan.Config
	cfg.Logger = logger
	srv, err := New(cfg)
	if err != nil {
		closeAll()
		return err
	}
	if cfg.TLSMode != TLSOff {
		logger.Printf("TLS %s", cfg.TLSMode)
	}
	var side []*http.Server // the control socket and the metrics listener
	defer func() {
		for _, hs := range side {
			hs.Close()
		}
	}()
	if _, err := os.Stat(srv.stateDir); err != nil {
		// Not made just for the socket: a server without cow exports leaves no trace.
		logger.Printf("no control socket: %v (cow exports and the systemd unit make the state directory; nbdroot status --server works with --metrics)", err)
	} else if ctl, err := listenControl(srv.stateDir); err != nil {
		logger.Printf("warning: no control socket: %v (nbdroot overlays and nbdroot status then work on %s without this server)", err, srv.stateDir)
	} else {
		hs := &http.Server{Handler: srv.ControlHandler(), ReadHeaderTimeout: metricsTimeout, ErrorLog: logger}
		side = append(side, hs)
		go hs.Serve(ctl)
	}
	if metricsLn != nil {
		hs := &http.Server{Handler: srv.MetricsHandler(), ReadHeaderTimeout: metricsTimeout, ErrorLog: logger}
		side = append(side, hs)
		logger.Printf("metrics on http://%s/metrics", metricsLn.Addr())
		go hs.Serve(metricsLn)
	}
	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	var wg sync.WaitGroup
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		// The harness and users wait for this exact line; the address has the real port.
		fmt.Fprintf(logw, "listening on %s\n", ln.Addr())
		if plan.LogFile != "" {
			logger.Printf("listening on %s", ln.Addr())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(serveCtx, ln); err != nil && !errors.Is(err, ErrServerClosed) && serveCtx.Err() == nil {
				errc <- err
			}
		}()
	}
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			logger.Printf("shutting down: answering requests in flight, then flushing")
			break loop
		case err := <-errc:
			runErr = err
			logger.Printf("listener failed: %v; shutting down", err)
			break loop
		case <-reload:
			np, err := o.Load()
			var skipped []error
			if err == nil {
				err = temps.apply(np.Config.Exports)
			}
			if err == nil {
				skipped, err = np.skipBroken(o.Strict)
			}
			if err == nil {
				err = storeUnanswered(skipped)
			}
			if err == nil {
				for _, err := range skipped {
					logger.Printf("%v: skipped, serving the others", err)
				}
				ncfg := np.Config
				ncfg.Logger = logger
				err = srv.Reload(ncfg)
			}
			if err != nil {
				logger.Printf("reload failed, keeping the current configuration: %v", err)
				continue
			}
			if o.Companion != nil {
				o.Companion.Reload(np.Config.Exports)
			}
			logger.Printf("configuration reloaded")
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), max(srv.config().DrainTimeout, 0)+30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, ErrServerClosed) {
		logger.Printf("shutdown: %v", err)
		if runErr == nil && !errors.Is(err, context.DeadlineExceeded) {
			runErr = err
		}
	}
	stopServing()
	wg.Wait()
	logger.Printf("stopped")
	return runErr
}

// minProcs is the fewest Ps (runtime.GOMAXPROCS) the server runs with. Its work is system
// calls that are CPU-bound in the kernel — TCP sends, page-cache copies — made raw so the
// runtime does not hand their P over (sockio_linux.go). With one P per CPU, the runtime
// assumes it owns the CPUs; on a machine it shares (a boot server that also runs DHCP,
// TFTP and more; a virtual machine on a busy host) the kernel deschedules its few threads,
// and every connection queued on a descheduled P waits with it. More Ps than CPUs let the
// kernel interleave connections as it would a thread-per-connection server's threads. On
// a 2-CPU machine under load from other work, a storm of 200 clients took about a third
// less time with 32 Ps than with 8, and with 8 less than with 2, at the same CPU time;
// one busy connection runs as before. Machines with more CPUs get one P each.
const minProcs = 32

// setProcs raises GOMAXPROCS to minProcs unless the environment chose a value.
func setProcs() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < minProcs {
		runtime.GOMAXPROCS(minProcs)
	}
}
