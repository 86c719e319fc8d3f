package nbdserver

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"
)

// Prometheus metrics (`nbdroot serve --metrics ADDR:PORT`, path /metrics). Client labels
// are identities, or "@ADDRESS" for clients without one. Values are read from the fleet
// counters when Prometheus scrapes, so serving requests never touches a Prometheus type.
var (
	mClientConns = prometheus.NewDesc("nbdroot_client_connections",
		"Open connections of a client to an export.", []string{"export", "client"}, nil)
	mClientConnsTotal = prometheus.NewDesc("nbdroot_client_connections_total",
		"Connections a client has made to an export.", []string{"export", "client"}, nil)
	mClientReconnects = prometheus.NewDesc("nbdroot_client_reconnects_total",
		"Connections that resumed a client's session after it had none: a resumed overlay, or a client without identity coming back.", []string{"export", "client"}, nil)
	mClientRead = prometheus.NewDesc("nbdroot_client_read_bytes_total",
		"Bytes a client read from an export.", []string{"export", "client"}, nil)
	mClientWritten = prometheus.NewDesc("nbdroot_client_written_bytes_total",
		"Bytes a client wrote to an export.", []string{"export", "client"}, nil)
	mClientLatency = prometheus.NewDesc("nbdroot_client_request_duration_seconds",
		"Time from reading a request to queueing its reply, by operation (read, write, flush, other).", []string{"export", "client", "op"}, nil)
	mClientLast = prometheus.NewDesc("nbdroot_client_last_activity_timestamp_seconds",
		"When a client last sent requests to an export (or connected or disconnected).", []string{"export", "client"}, nil)
	mOverlayBytes = prometheus.NewDesc("nbdroot_overlay_allocated_bytes",
		"Disk space taken by the data of an attached copy-on-write overlay.", []string{"export", "client", "overlay", "kind"}, nil)
	mOverlayDirFree = prometheus.NewDesc("nbdroot_overlay_dir_free_bytes",
		"Free space for overlays in an overlay directory (writes fail with EIO when it runs out).", []string{"dir"}, nil)
	mConns = prometheus.NewDesc("nbdroot_connections",
		"Open connections, handshaking ones included.", nil, nil)
	mCacheLookups = prometheus.NewDesc("nbdroot_store_cache_lookups_total",
		"Block lookups of reads of s3:// images: hit (in memory), join (on its way: another read's GET or read-ahead), miss (fetched).", []string{"result"}, nil)
	mCacheFetched = prometheus.NewDesc("nbdroot_store_fetched_bytes_total",
		"Bytes of s3:// images fetched from the store (ranged GETs).", nil, nil)
	mCacheGets = prometheus.NewDesc("nbdroot_store_fetches_total",
		"Ranged GETs of s3:// images.", nil, nil)
	mCacheReadAhead = prometheus.NewDesc("nbdroot_store_readahead_blocks_total",
		"Blocks of s3:// images read ahead.", nil, nil)
	mCacheReadAheadUsed = prometheus.NewDesc("nbdroot_store_readahead_used_blocks_total",
		"Blocks of s3:// images read ahead that a read then found in memory.", nil, nil)
	mCacheBytes = prometheus.NewDesc("nbdroot_store_cache_bytes",
		"Memory held by the block cache of s3:// images, and its bound (max).", []string{"what"}, nil)
)

// collector exposes a Server's counters to Prometheus.
type collector struct{ s *Server }

var _ prometheus.Collector = collector{}

// Describe implements prometheus.Collector.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mClientConns, mClientConnsTotal, mClientReconnects, mClientRead,
		mClientWritten, mClientLatency, mClientLast, mOverlayBytes, mOverlayDirFree, mConns,
		mCacheLookups, mCacheFetched, mCacheGets, mCacheReadAhead, mCacheReadAheadUsed, mCacheBytes} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	var bounds [len(latencyBuckets)]float64
	for i, b := range latencyBuckets {
		bounds[i] = b.Seconds()
	}
	for _, cs := range s.fleet.all() {
		ex, cl := cs.key.export, cs.key.client.String()
		ch <- prometheus.MustNewConstMetric(mClientConns, prometheus.GaugeValue, float64(cs.conns.Load()), ex, cl)
		ch <- prometheus.MustNewConstMetric(mClientConnsTotal, prometheus.CounterValue, float64(cs.connsTotal.Load()), ex, cl)
		ch <- prometheus.MustNewConstMetric(mClientReconnects, prometheus.CounterValue, float64(cs.reconnects.Load()), ex, cl)
		ch <- prometheus.MustNewConstMetric(mClientRead, prometheus.CounterValue, float64(cs.readBytes.Load()), ex, cl)
		ch <- prometheus.MustNewConstMetric(mClientWritten, prometheus.CounterValue, float64(cs.writtenBytes.Load()), ex, cl)
		ch <- prometheus.MustNewConstMetric(mClientLast, prometheus.GaugeValue, float64(cs.lastActive.Load())/1e9, ex, cl)
		for op := range cs.lat {
			cum, n, sum := cs.lat[op].snapshot()
			if n == 0 {
				continue // a histogram appears once it has something to say
			}
			buckets := make(map[float64]uint64, len(cum))
			for i, v := range cum {
				buckets[bounds[i]] = v
			}
			ch <- prometheus.MustNewConstHistogram(mClientLatency, n, sum.Seconds(), buckets, ex, cl, opNames[op])
		}
	}
	s.ovs.mu.Lock()
	ovs := make([]*overlay, 0, len(s.ovs.byID))
	for _, ov := range s.ovs.byID {
		ovs = append(ovs, ov)
	}
	s.ovs.mu.Unlock()
	for _, ov := range ovs {
		ch <- prometheus.MustNewConstMetric(mOverlayBytes, prometheus.GaugeValue, float64(ov.allocated()),
			ov.h.Export, ov.h.Client.String(), ov.h.ID.String(), string(ov.h.Kind))
	}
	s.mu.Lock()
	conns := len(s.conns)
	roots := map[string]bool{}
	for _, e := range s.exports {
		if e.cfg.Cow {
			roots[e.root] = true
		}
	}
	s.mu.Unlock()
	for root := range roots {
		var st unix.Statfs_t
		if unix.Statfs(root, &st) == nil {
			ch <- prometheus.MustNewConstMetric(mOverlayDirFree, prometheus.GaugeValue, float64(st.Bavail)*float64(st.Bsize), root)
		}
	}
	ch <- prometheus.MustNewConstMetric(mConns, prometheus.GaugeValue, float64(conns))
	if o := s.obj.Load(); o != nil {
		st := o.cache.Stats()
		ch <- prometheus.MustNewConstMetric(mCacheLookups, prometheus.CounterValue, float64(st.Hits), "hit")
		ch <- prometheus.MustNewConstMetric(mCacheLookups, prometheus.CounterValue, float64(st.Joins), "join")
		ch <- prometheus.MustNewConstMetric(mCacheLookups, prometheus.CounterValue, float64(st.Misses), "miss")
		ch <- prometheus.MustNewConstMetric(mCacheFetched, prometheus.CounterValue, float64(st.FetchedBytes))
		ch <- prometheus.MustNewConstMetric(mCacheGets, prometheus.CounterValue, float64(st.Fetches))
		ch <- prometheus.MustNewConstMetric(mCacheReadAhead, prometheus.CounterValue, float64(st.ReadAhead))
		ch <- prometheus.MustNewConstMetric(mCacheReadAheadUsed, prometheus.CounterValue, float64(st.ReadAheadUsed))
		ch <- prometheus.MustNewConstMetric(mCacheBytes, prometheus.GaugeValue, float64(st.Bytes), "used")
		ch <- prometheus.MustNewConstMetric(mCacheBytes, prometheus.GaugeValue, float64(st.MaxBytes), "max")
	}
}

// MetricsHandler serves /metrics (Prometheus: the server's counters, Go runtime and
// process metrics) and /status (Status as JSON, what `nbdroot status --server` reads).
func (s *Server) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{s}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: s.log}))
	mux.HandleFunc("GET /status", s.serveStatus)
	return mux
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.Status())
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// metricsTimeout bounds how long a scrape or status request may take to arrive.
const metricsTimeout = 10 * time.Second
