package main

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mptcpgo/mptcpgo/pkg/proxy"
)

// TestProxyMetrics: each rule's counters are exported with its mode and addresses, and the
// connection limit beside them.
func TestProxyMetrics(t *testing.T) {
	fwd := &proxy.Server{Rule: proxy.Rule{Listen: "127.0.0.1:8080", Remote: "10.0.0.2:80"}, Forward: true}
	acc := &proxy.Server{Rule: proxy.Rule{Listen: ":5201", Remote: "127.0.0.1:5201"}}
	fwd.Stats.AcceptErrors.Add(7)
	fwd.Stats.Refused.Add(3)
	acc.Stats.Accepted.Add(5)
	acc.Stats.Active.Add(2)
	conv := &proxy.Server{Rule: proxy.Rule{Listen: ":5124"}, Convert: &proxy.Converter{}}
	conv.Stats.Converted.Add(4)
	conv.Stats.ConvertRefused.Add(2)
	conv.Stats.ConvertErrorsSent.Add(3)
	fwd.Stats.ConvertErrorsReceived.Add(1)
	m := &metrics{b: &backend{servers: []*proxy.Server{fwd, acc, conv}, limit: proxy.NewLimit(8)}}
	got := gather(t, proxiesOnly{m})
	want := map[string]float64{
		"mptcpd_proxy_accept_errors_total listen=127.0.0.1:8080 mode=forward remote=10.0.0.2:80": 7,
		"mptcpd_proxy_refused_total listen=127.0.0.1:8080 mode=forward remote=10.0.0.2:80":       3,
		"mptcpd_proxy_accepted_total listen=:5201 mode=accept remote=127.0.0.1:5201":             5,
		"mptcpd_proxy_connections listen=:5201 mode=accept remote=127.0.0.1:5201":                2,
		"mptcpd_proxy_max_connections":                                                               8,
		"mptcpd_convert_converted_total listen=:5124 mode=convert remote=":                           4,
		"mptcpd_convert_refused_total listen=:5124 mode=convert remote=":                             2,
		"mptcpd_convert_errors_sent_total listen=:5124 mode=convert remote=":                         3,
		"mptcpd_convert_errors_received_total listen=127.0.0.1:8080 mode=forward remote=10.0.0.2:80": 1,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if n := len(got); n != 3*13+1 {
		t.Errorf("%d metrics, want %d", n, 3*13+1)
	}
	b := &backend{servers: []*proxy.Server{fwd, acc, conv}}
	c := b.proxyCounters()
	if c["ProxyAcceptErrors"] != 7 || c["ProxyRefused"] != 3 || c["ProxyAccepted"] != 5 || c["ProxyActive"] != 2 ||
		c["ConvertConverted"] != 4 || c["ConvertRefused"] != 2 || c["ConvertErrorsSent"] != 3 || c["ConvertErrorsReceived"] != 1 {
		t.Errorf("proxy counters %v", c)
	}
}

// gather collects c's metrics: each value by its name and labels ("name label=value ...").
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, pb := range f.GetMetric() {
			key := f.GetName()
			for _, l := range pb.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			got[key] = pb.GetCounter().GetValue() + pb.GetGauge().GetValue()
		}
	}
	return got
}

// proxiesOnly collects the proxies' metrics alone (the others need a stack).
type proxiesOnly struct{ m *metrics }

func (p proxiesOnly) Describe(chan<- *prometheus.Desc) {}

func (p proxiesOnly) Collect(ch chan<- prometheus.Metric) { p.m.collectProxies(ch) }
