// Package scrape reads a server's /metrics for `cachectl stats` (and the
// tests that check what it shows): a scrape parsed into families, and the
// summary cachectl prints.
package scrape

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is a scrape of /metrics, by metric family name.
type Families map[string]*dto.MetricFamily

// Scrape reads an admin port's /metrics (addr is host:port or a URL) and
// parses it with Prometheus' own text parser.
func Scrape(ctx context.Context, addr string) (Families, error) {
	url := addr
	if !strings.Contains(url, "://") {
		url = "http://" + addr + "/metrics"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// Plain text, the format a person can also read with curl.
	req.Header.Set("Accept", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return Parse(resp.Body)
}

// Parse reads the Prometheus text format.
func Parse(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return fams, nil
}

// Value is the sum over the series of family whose labels include every
// given name=value pair: the counter's or gauge's value, or a histogram's
// count (pass the name without _count). A missing family sums to 0.
func (f Families) Value(family string, labels ...string) float64 {
	fam := f[family]
	if fam == nil {
		return 0
	}
	var sum float64
	for _, m := range fam.GetMetric() {
		if !matches(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

// Sum is the sum of a histogram's observations over the matching series.
func (f Families) Sum(family string, labels ...string) float64 {
	fam := f[family]
	if fam == nil {
		return 0
	}
	var sum float64
	for _, m := range fam.GetMetric() {
		if m.Histogram != nil && matches(m, labels) {
			sum += m.GetHistogram().GetSampleSum()
		}
	}
	return sum
}

// By sums family by the values of one label, over the series matching
// labels.
func (f Families) By(family, label string, labels ...string) map[string]float64 {
	out := map[string]float64{}
	fam := f[family]
	if fam == nil {
		return out
	}
	for _, m := range fam.GetMetric() {
		if !matches(m, labels) {
			continue
		}
		var v string
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				v = l.GetValue()
			}
		}
		out[v] += Families{family: &dto.MetricFamily{Metric: []*dto.Metric{m}}}.Value(family)
	}
	return out
}

func matches(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// sortedKeys returns m's keys in order, for stable output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Service is the service.name and service.instance.id the scraped server
// reports in target_info.
func (f Families) Service() (name, instance string) {
	fam := f["target_info"]
	if fam == nil || len(fam.GetMetric()) == 0 {
		return "", ""
	}
	for _, l := range fam.GetMetric()[0].GetLabel() {
		switch l.GetName() {
		case "service_name":
			name = l.GetValue()
		case "service_instance_id":
			instance = l.GetValue()
		}
	}
	return name, instance
}
