//! Prometheus metrics, rendered as the text exposition format on `GET /metrics`.
//!
//! A handful of series, so they are kept here by hand (a mutex per family; each update is a few
//! additions) instead of through a metrics facade and exporter crate: no global recorder, no
//! upkeep task, names and labels exactly as documented.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the duration histograms: 50 us to 60 s, roughly x2.5 apart.
const DURATION_BUCKETS: &[f64] = &[
    5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Upper bounds of the batch-size histograms (requests per batch).
const REQUEST_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// Upper bounds of the batch-token histograms.
const TOKEN_BUCKETS: &[f64] =
    &[8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0];

/// A cumulative histogram with fixed bucket bounds.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last entry is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// `name_bucket{labels,le=..}`, `name_sum`, `name_count`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c;
            let le = self.bounds.get(i).map_or_else(|| "+Inf".to_string(), |b| format!("{b}"));
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Every metric of the server.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    request_duration: Mutex<BTreeMap<String, Histogram>>,
    /// Per model.
    queue_duration: Mutex<BTreeMap<String, Histogram>>,
    /// Per (model, device).
    device_duration: Mutex<BTreeMap<(String, String), Histogram>>,
    batch_tokens: Mutex<BTreeMap<(String, String), Histogram>>,
    batch_requests: Mutex<BTreeMap<(String, String), Histogram>>,
    tokens_total: Mutex<BTreeMap<(String, String), u64>>,
    dropped: Mutex<BTreeMap<&'static str, u64>>,
    /// Per model.
    queue_tokens: Mutex<BTreeMap<String, i64>>,
    /// Per device: 1 in the rotation, 0 failed.
    device_up: Mutex<BTreeMap<String, i64>>,
    device_failures: Mutex<BTreeMap<String, u64>>,
    retried_inputs: AtomicU64,
    in_flight: AtomicI64,
}

/// Locks a metric; a panic elsewhere while holding it cannot make a metric unusable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn pair(model: &str, device: &str) -> (String, String) {
    (esc(model), esc(device))
}

impl Metrics {
    /// One finished HTTP request.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        *lock(&self.requests).entry((route.to_string(), status)).or_default() += 1;
        lock(&self.request_duration)
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(DURATION_BUCKETS))
            .observe(seconds);
    }

    /// One device batch of `model` on `device`: its size, tokens and forward-pass time.
    pub fn batch(&self, model: &str, device: &str, requests: usize, tokens: usize, device_seconds: f64) {
        let key = pair(model, device);
        lock(&self.batch_requests)
            .entry(key.clone())
            .or_insert_with(|| Histogram::new(REQUEST_BUCKETS))
            .observe(requests as f64);
        lock(&self.batch_tokens)
            .entry(key.clone())
            .or_insert_with(|| Histogram::new(TOKEN_BUCKETS))
            .observe(tokens as f64);
        lock(&self.device_duration)
            .entry(key.clone())
            .or_insert_with(|| Histogram::new(DURATION_BUCKETS))
            .observe(device_seconds);
        *lock(&self.tokens_total).entry(key).or_default() += tokens as u64;
    }

    /// Time one input of `model` waited in the queue before its batch started.
    pub fn queued(&self, model: &str, seconds: f64) {
        lock(&self.queue_duration)
            .entry(esc(model))
            .or_insert_with(|| Histogram::new(DURATION_BUCKETS))
            .observe(seconds);
    }

    /// Queued work dropped before it reached the device (`reason`: `cancelled` = the client went
    /// away or its request timed out; `shutdown` = the drain ran out of time).
    pub fn dropped(&self, reason: &'static str) {
        *lock(&self.dropped).entry(reason).or_default() += 1;
    }

    pub fn add_queue_tokens(&self, model: &str, delta: i64) {
        *lock(&self.queue_tokens).entry(esc(model)).or_default() += delta;
    }

    /// A device joined (`true`) or left (`false`) the rotation.
    pub fn device_up(&self, device: &str, up: bool) {
        lock(&self.device_up).insert(esc(device), i64::from(up));
    }

    /// A device failed and left the rotation.
    pub fn device_failed(&self, device: &str) {
        self.device_up(device, false);
        *lock(&self.device_failures).entry(esc(device)).or_default() += 1;
    }

    /// Inputs of a failed device's batch queued again for another device.
    pub fn retried(&self, inputs: usize) {
        self.retried_inputs.fetch_add(inputs as u64, Ordering::Relaxed);
    }

    pub fn add_in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        header(&mut out, "fusebert_requests_total", "counter", "HTTP requests by route and status");
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(out, "fusebert_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        header(&mut out, "fusebert_request_duration_seconds", "histogram", "HTTP request latency by route");
        for (route, h) in lock(&self.request_duration).iter() {
            h.render(&mut out, "fusebert_request_duration_seconds", &format!("route=\"{route}\""));
        }
        let name = "fusebert_queue_duration_seconds";
        header(&mut out, name, "histogram", "time an input waits before its device batch starts, by model");
        for (model, h) in lock(&self.queue_duration).iter() {
            h.render(&mut out, name, &format!("model=\"{model}\""));
        }
        let hists = [
            ("fusebert_device_duration_seconds", "forward-pass time per device batch", &self.device_duration),
            ("fusebert_batch_tokens", "tokens per device batch", &self.batch_tokens),
            ("fusebert_batch_requests", "inputs per device batch", &self.batch_requests),
        ];
        for (name, help, h) in hists {
            header(&mut out, name, "histogram", &format!("{help}, by model and device"));
            for ((model, device), h) in lock(h).iter() {
                h.render(&mut out, name, &format!("model=\"{model}\",device=\"{device}\""));
            }
        }
        header(&mut out, "fusebert_tokens_total", "counter", "tokens run through the model, by model and device");
        for ((model, device), n) in lock(&self.tokens_total).iter() {
            let _ = writeln!(out, "fusebert_tokens_total{{model=\"{model}\",device=\"{device}\"}} {n}");
        }
        header(&mut out, "fusebert_dropped_total", "counter", "queued inputs dropped before the device");
        for (reason, n) in lock(&self.dropped).iter() {
            let _ = writeln!(out, "fusebert_dropped_total{{reason=\"{reason}\"}} {n}");
        }
        header(&mut out, "fusebert_queue_tokens", "gauge", "tokens waiting in the queue, by model");
        for (model, n) in lock(&self.queue_tokens).iter() {
            let _ = writeln!(out, "fusebert_queue_tokens{{model=\"{model}\"}} {n}");
        }
        header(&mut out, "fusebert_device_up", "gauge", "1 while the device is in the rotation, 0 once it failed");
        for (device, v) in lock(&self.device_up).iter() {
            let _ = writeln!(out, "fusebert_device_up{{device=\"{device}\"}} {v}");
        }
        header(&mut out, "fusebert_device_failures_total", "counter", "devices that failed and left the rotation");
        for (device, n) in lock(&self.device_failures).iter() {
            let _ = writeln!(out, "fusebert_device_failures_total{{device=\"{device}\"}} {n}");
        }
        header(
            &mut out,
            "fusebert_retried_inputs_total",
            "counter",
            "inputs of a failed device's batch run again elsewhere",
        );
        let _ = writeln!(out, "fusebert_retried_inputs_total {}", self.retried_inputs.load(Ordering::Relaxed));
        header(&mut out, "fusebert_in_flight_requests", "gauge", "HTTP requests being handled");
        let _ = writeln!(out, "fusebert_in_flight_requests {}", self.in_flight.load(Ordering::Relaxed));
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.add_queue_tokens("a\"b\\c", 3);
        assert!(m.render().contains("fusebert_queue_tokens{model=\"a\\\"b\\\\c\"} 3\n"), "{}", m.render());
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_everything() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"2\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_sum{a=\"b\"} 6\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 4\n"), "{out}");
    }
}
