//! Plots as plain SVG, written by hand (no plotting crate, no browser needed to make them):
//! a log-log roofline with one labelled point per kernel, and latency / throughput against
//! batch size for `bench --plot`.
use std::fmt::Write;

use super::roofline::Prediction;

const W: f64 = 900.0;
const H: f64 = 600.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 220.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// Escapes text for XML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A log-scale axis from `lo` to `hi` (decades) onto pixels `[p0, p1]`.
struct LogAxis {
    lo: f64,
    hi: f64,
    p0: f64,
    p1: f64,
}

impl LogAxis {
    fn new(min: f64, max: f64, p0: f64, p1: f64) -> LogAxis {
        let lo = min.max(1e-12).log10().floor();
        let hi = max.max(min * 10.0).log10().ceil();
        LogAxis { lo, hi: hi.max(lo + 1.0), p0, p1 }
    }
    fn px(&self, v: f64) -> f64 {
        let t = (v.max(1e-12).log10() - self.lo) / (self.hi - self.lo);
        self.p0 + t.clamp(0.0, 1.0) * (self.p1 - self.p0)
    }
    fn decades(&self) -> impl Iterator<Item = f64> {
        (self.lo as i32..=self.hi as i32).map(|e| 10f64.powi(e))
    }
}

fn header(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>
<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        W / 2.0,
        escape(title)
    );
}

fn axes(out: &mut String, x: &LogAxis, y: &LogAxis, xlabel: &str, ylabel: &str) {
    for v in x.decades() {
        let p = x.px(v);
        let _ = writeln!(
            out,
            r##"<line x1="{p:.1}" y1="{}" x2="{p:.1}" y2="{}" stroke="#ddd"/><text x="{p:.1}" y="{}" text-anchor="middle">{v:e}</text>"##,
            TOP,
            H - BOTTOM,
            H - BOTTOM + 16.0
        );
    }
    for v in y.decades() {
        let p = y.px(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{p:.1}" x2="{}" y2="{p:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v:e}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            p + 4.0
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{}</text>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM,
        (LEFT + W - RIGHT) / 2.0,
        H - 16.0,
        escape(xlabel),
        H / 2.0,
        H / 2.0,
        escape(ylabel)
    );
}

const COLORS: [&str; 10] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// Roofline of `p`: the DRAM bandwidth slope and the dense tensor roof(s), and each kernel
/// (summed over layers) at its arithmetic intensity (useful FLOPs per DRAM byte) and predicted
/// TFLOP/s. Kernels without tensor FLOPs (layernorm, quantize, ...) sit on the left edge at
/// their GB/s, listed in the legend with their time.
pub fn roofline_svg(p: &Prediction, title: &str) -> String {
    let g = &p.gpu;
    let peak = if p.precision == "int8" { g.peak_tops_int8 } else { g.peak_tflops_f16 };
    let bw = g.dram_gbps * 1e9 / 1e12; // TFLOP/s per FLOP/B
    let x = LogAxis::new(0.1, 1e4, LEFT, W - RIGHT);
    let y = LogAxis::new(1e-2, peak * 2.0, H - BOTTOM, TOP);
    let mut out = String::new();
    header(&mut out, title);
    axes(&mut out, &x, &y, "arithmetic intensity (useful FLOP per DRAM byte)", "TFLOP/s");
    // roofs: bandwidth slope up to the ridge, then the peaks (dense and mma.sync-reachable)
    let ridge = peak / bw;
    let (x0, x1) = (10f64.powf(x.lo), 10f64.powf(x.hi));
    let _ = writeln!(
        out,
        r##"<polyline fill="none" stroke="black" stroke-width="2" points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}"/>"##,
        x.px(x0),
        y.px(x0 * bw),
        x.px(ridge),
        y.px(peak),
        x.px(x1),
        y.px(peak)
    );
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}">dense peak {peak} T/s, DRAM {} GB/s</text>"##,
        x.px(ridge) + 4.0,
        y.px(peak) - 6.0,
        g.dram_gbps
    );
    if g.mma_sync_fraction < 1.0 {
        let r = peak * g.mma_sync_fraction;
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}">mma.sync ceiling ({:.0}%)</text>"##,
            x.px(r / bw),
            y.px(r),
            x.px(x1),
            y.px(r),
            x.px(r / bw) + 4.0,
            y.px(r) + 14.0,
            g.mma_sync_fraction * 100.0
        );
    }
    for (i, k) in p.kernels.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let label = format!("{} ({})", k.name, k.step);
        let (px, py) = if k.flops > 0 {
            (x.px(k.intensity), y.px(k.tflops))
        } else {
            // no matrix FLOPs: at the left edge, height = achieved GB/s as if 1 FLOP/B
            (x.px(x0), y.px(k.dram_bytes as f64 / (k.time_us * 1e-6) / 1e12))
        };
        let _ = writeln!(
            out,
            r##"<circle cx="{px:.1}" cy="{py:.1}" r="5" fill="{c}"><title>{}</title></circle><text x="{:.1}" y="{:.1}" font-size="10">{}</text>"##,
            escape(&label),
            px + 7.0,
            py - 4.0,
            escape(k.step)
        );
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{c}"/><text x="{:.1}" y="{:.1}" font-size="10">{} {:.1} us</text>"##,
            W - RIGHT + 12.0,
            TOP + 10.0 + 16.0 * i as f64,
            W - RIGHT + 22.0,
            TOP + 14.0 + 16.0 * i as f64,
            escape(&label),
            k.time_us
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{}" font-size="11">predicted total {:.3} ms, floor {:.3} ms ({} tokens, {} sequences{})</text>"##,
        H - 2.0,
        p.total_ms,
        p.floor_ms,
        p.tokens,
        p.sequences,
        if p.graphs { ", CUDA graph" } else { "" }
    );
    out.push_str("</svg>\n");
    out
}

/// One measured (or predicted) shape for [`bench_svg`].
#[derive(Debug, Clone)]
pub struct BenchPoint {
    pub batch: usize,
    pub tokens: usize,
    pub latency_ms: f64,
    pub tokens_per_s: f64,
}

/// One panel of [`bench_svg`]: label, the value plotted, left edge.
type Panel = (&'static str, fn(&BenchPoint) -> f64, f64);

/// Latency (left panel) and tokens/s (right panel) against batch size, one line per
/// sequence length, log-log.
pub fn bench_svg(points: &[BenchPoint], title: &str) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let half = (W - LEFT - RIGHT) / 2.0;
    let bmax = points.iter().map(|p| p.batch).max().unwrap_or(1) as f64;
    let mut lens: Vec<usize> = points.iter().map(|p| p.tokens).collect();
    lens.sort_unstable();
    lens.dedup();
    let panels: [Panel; 2] =
        [("latency (ms)", |p| p.latency_ms, LEFT), ("tokens / s", |p| p.tokens_per_s, LEFT + half + 40.0)];
    for (label, f, x0) in panels {
        let lo = points.iter().map(f).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(f).fold(0.0, f64::max);
        let x = LogAxis::new(1.0, bmax.max(10.0), x0, x0 + half - 40.0);
        let y = LogAxis::new(lo.max(1e-9), hi.max(lo * 10.0), H - BOTTOM, TOP);
        for v in x.decades() {
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{}" text-anchor="middle">{v}</text>"##,
                x.px(v),
                H - BOTTOM + 16.0
            );
        }
        for v in y.decades() {
            let _ = writeln!(
                out,
                r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:e}</text>"##,
                x0,
                y.px(v),
                x0 + half - 40.0,
                y.px(v),
                x0 - 4.0,
                y.px(v) + 4.0
            );
        }
        let _ = writeln!(
            out,
            r##"<rect x="{x0}" y="{TOP}" width="{}" height="{}" fill="none" stroke="black"/><text x="{:.1}" y="{}" text-anchor="middle">{} vs batch</text>"##,
            half - 40.0,
            H - TOP - BOTTOM,
            x0 + (half - 40.0) / 2.0,
            H - 20.0,
            escape(label)
        );
        for (i, &len) in lens.iter().enumerate() {
            let mut pts: Vec<&BenchPoint> = points.iter().filter(|p| p.tokens == len).collect();
            pts.sort_by_key(|p| p.batch);
            let c = COLORS[i % COLORS.len()];
            let line: Vec<String> =
                pts.iter().map(|p| format!("{:.1},{:.1}", x.px(p.batch as f64), y.px(f(p)))).collect();
            let _ = writeln!(out, r##"<polyline fill="none" stroke="{c}" points="{}"/>"##, line.join(" "));
            for p in pts {
                let _ = writeln!(
                    out,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{c}"><title>batch {} x {} tokens: {:.4}</title></circle>"##,
                    x.px(p.batch as f64),
                    y.px(f(p)),
                    p.batch,
                    p.tokens,
                    f(p)
                );
            }
        }
    }
    for (i, len) in lens.iter().enumerate() {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" fill="{}">{len} tokens / sequence</text>"##,
            W - RIGHT + 60.0,
            TOP + 14.0 + 16.0 * i as f64,
            COLORS[i % COLORS.len()]
        );
    }
    out.push_str("</svg>\n");
    out
}
