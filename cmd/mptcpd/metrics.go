package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics exports the stack's counters (the names of `mptcpctl stats`, which follow the
// kernel's MPTcpExt) and per-connection and per-subflow gauges, at /metrics.
type metrics struct {
	b *backend
}

var (
	descCounter = prometheus.NewDesc("mptcpd_mptcpext_total",
		"MPTCP counters, named like the kernel's MPTcpExt (as `mptcpctl stats` shows them).", []string{"counter"}, nil)
	descConns = prometheus.NewDesc("mptcpd_connections",
		"MPTCP connections open.", nil, nil)
	subLabels   = []string{"token", "local", "remote"}
	descRTT     = prometheus.NewDesc("mptcpd_subflow_rtt_seconds", "Smoothed round-trip time of a subflow.", subLabels, nil)
	descCwnd    = prometheus.NewDesc("mptcpd_subflow_cwnd_segments", "Congestion window of a subflow.", subLabels, nil)
	descSent    = prometheus.NewDesc("mptcpd_subflow_sent_bytes", "Bytes written to a subflow.", subLabels, nil)
	descRecv    = prometheus.NewDesc("mptcpd_subflow_received_bytes", "Bytes read from a subflow.", subLabels, nil)
	descRetrans = prometheus.NewDesc("mptcpd_subflow_retransmits", "Segments a subflow retransmitted.", subLabels, nil)
	descBackup  = prometheus.NewDesc("mptcpd_subflow_backup", "1 if a subflow is a backup (ours or the peer's flag).", subLabels, nil)

	proxyLabels       = []string{"mode", "listen", "remote"}
	descProxyAccepted = prometheus.NewDesc("mptcpd_proxy_accepted_total", "Connections a proxy accepted.", proxyLabels, nil)
	descProxyAcceptEr = prometheus.NewDesc("mptcpd_proxy_accept_errors_total", "Failed accepts (out of file descriptors, memory, ...), waited out.", proxyLabels, nil)
	descProxyRefused  = prometheus.NewDesc("mptcpd_proxy_refused_total", "Connections reset because --max-conns were open.", proxyLabels, nil)
	descProxyFailed   = prometheus.NewDesc("mptcpd_proxy_failed_total", "Connections whose other side could not be opened.", proxyLabels, nil)
	descProxyDialWait = prometheus.NewDesc("mptcpd_proxy_dial_waits_total", "Waits to open a connection's other side, out of file descriptors, memory, ...", proxyLabels, nil)
	descProxyMPTCP    = prometheus.NewDesc("mptcpd_proxy_mptcp_total", "Connections relayed over MPTCP (the others fell back to TCP).", proxyLabels, nil)
	descProxyBytesIn  = prometheus.NewDesc("mptcpd_proxy_bytes_in_total", "Bytes relayed from the listening side to the remote side.", proxyLabels, nil)
	descProxyBytesOut = prometheus.NewDesc("mptcpd_proxy_bytes_out_total", "Bytes relayed from the remote side to the listening side.", proxyLabels, nil)
	descConverted     = prometheus.NewDesc("mptcpd_convert_converted_total", "Connections carried through RFC 8803 Convert: relayed to a Connect TLV's destination (--convert), or accepted by the converter (--convert-via).", proxyLabels, nil)
	descConvRefused   = prometheus.NewDesc("mptcpd_convert_refused_total", "Convert requests refused by policy: client, destination or cookie (--convert).", proxyLabels, nil)
	descConvErrSent   = prometheus.NewDesc("mptcpd_convert_errors_sent_total", "Convert Error TLVs sent (--convert).", proxyLabels, nil)
	descConvErrRecv   = prometheus.NewDesc("mptcpd_convert_errors_received_total", "Convert Error TLVs received from the converter (--convert-via).", proxyLabels, nil)
	descProxyActive   = prometheus.NewDesc("mptcpd_proxy_connections", "Connections a proxy relays now.", proxyLabels, nil)
	descProxyMax      = prometheus.NewDesc("mptcpd_proxy_max_connections", "Connections all proxies together may relay at once (--max-conns).", nil, nil)
	descHeapReleases  = prometheus.NewDesc("mptcpd_heap_releases_total", "Times the Go heap's free pages were given back to the system once the daemon was quiet.", nil, nil)
	descHeapReleased  = prometheus.NewDesc("mptcpd_heap_released_bytes_total", "Heap bytes those releases gave back to the system, by the runtime's count.", nil, nil)
)

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCounter, descConns, descRTT, descCwnd, descSent, descRecv, descRetrans, descBackup,
		descProxyAccepted, descProxyAcceptEr, descProxyRefused, descProxyFailed, descProxyDialWait, descProxyMPTCP, descProxyBytesIn, descProxyBytesOut,
		descConverted, descConvRefused, descConvErrSent, descConvErrRecv, descProxyActive, descProxyMax, descHeapReleases, descHeapReleased} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.collectProxies(ch)
	m.collectHeap(ch)
	if c, err := m.b.stack.Counters(); err == nil {
		for name, v := range c {
			ch <- prometheus.MustNewConstMetric(descCounter, prometheus.CounterValue, float64(v), name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conns := m.b.Connections(ctx)
	ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(len(conns)))
	for _, c := range conns {
		for _, s := range c.Subflows {
			l := []string{strconv.FormatUint(uint64(c.Token), 10), s.Local.String(), s.Remote.String()}
			backup := 0.0
			if s.Backup || s.PeerBackup {
				backup = 1
			}
			ch <- prometheus.MustNewConstMetric(descRTT, prometheus.GaugeValue, s.RTT.Seconds(), l...)
			ch <- prometheus.MustNewConstMetric(descCwnd, prometheus.GaugeValue, float64(s.Cwnd), l...)
			ch <- prometheus.MustNewConstMetric(descSent, prometheus.GaugeValue, float64(s.BytesSent), l...)
			ch <- prometheus.MustNewConstMetric(descRecv, prometheus.GaugeValue, float64(s.BytesRecv), l...)
			ch <- prometheus.MustNewConstMetric(descRetrans, prometheus.GaugeValue, float64(s.Retrans), l...)
			ch <- prometheus.MustNewConstMetric(descBackup, prometheus.GaugeValue, backup, l...)
		}
	}
}

// collectHeap exports what the heap releaser did.
func (m *metrics) collectHeap(ch chan<- prometheus.Metric) {
	if h := m.b.heap; h != nil {
		ch <- prometheus.MustNewConstMetric(descHeapReleases, prometheus.CounterValue, float64(h.releases.Load()))
		ch <- prometheus.MustNewConstMetric(descHeapReleased, prometheus.CounterValue, float64(h.released.Load()))
	}
}

func (m *metrics) collectProxies(ch chan<- prometheus.Metric) {
	if m.b.limit != nil {
		ch <- prometheus.MustNewConstMetric(descProxyMax, prometheus.GaugeValue, float64(m.b.limit.Max()))
	}
	for _, s := range m.b.servers {
		l := []string{s.Mode(), s.Rule.Listen, s.Rule.Remote}
		st := &s.Stats
		for d, v := range map[*prometheus.Desc]uint64{
			descProxyAccepted: st.Accepted.Load(),
			descProxyAcceptEr: st.AcceptErrors.Load(),
			descProxyRefused:  st.Refused.Load(),
			descProxyFailed:   st.Failed.Load(),
			descProxyDialWait: st.DialWaits.Load(),
			descProxyMPTCP:    st.MPTCP.Load(),
			descProxyBytesIn:  st.BytesIn.Load(),
			descProxyBytesOut: st.BytesOut.Load(),
			descConverted:     st.Converted.Load(),
			descConvRefused:   st.ConvertRefused.Load(),
			descConvErrSent:   st.ConvertErrorsSent.Load(),
			descConvErrRecv:   st.ConvertErrorsReceived.Load(),
		} {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
		}
		ch <- prometheus.MustNewConstMetric(descProxyActive, prometheus.GaugeValue, float64(st.Active.Load()), l...)
	}
}

// serveMetrics listens on addr and serves /metrics until ctx ends.
// With withPprof it serves Go's runtime profiles at /debug/pprof/ as well.
func serveMetrics(ctx context.Context, addr string, withPprof bool, b *backend, log *slog.Logger) (net.Addr, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&metrics{b: b}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
	return ln.Addr(), nil
}
