//! SVG charts with `plotters` (SVG backend only: no font files or image libraries needed).
//!
//! - `latency-NNN.svg` per cell: latency percentile curves, one line per broker, on the usual
//!   HdrHistogram axes: x is the percentile on a "number of nines" log scale (90%, 99%, 99.9%
//!   are equally spaced) so the tail is visible, y is latency on a log scale.
//!   With repeats, the line is the median over repeats at each percentile and a shaded band
//!   spans the repeats' min-max.
//! - `<family>-throughput.svg`, `<family>-cpu_per_msg.svg`: small multiples, see
//!   [`super::multiples`].

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::json::{RunRecord, Status};
use crate::stats::LatencyHistogram;

/// Names of the chart files written, relative to the results directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChartFiles {
    /// The HTML report, when written.
    pub html: Option<String>,
    /// Per scenario family, its figures.
    pub families: Vec<(String, Vec<String>)>,
    /// Per cell index.
    pub latency: BTreeMap<usize, String>,
}

/// Formats microseconds with a unit that keeps three significant digits.
pub fn fmt_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        let ms = us / 1_000.0;
        let digits = if ms < 10.0 {
            2
        } else if ms < 100.0 {
            1
        } else {
            0
        };
        format!("{ms:.digits$} ms")
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// A percentile given as "number of nines" (0 -> 0%, 1 -> 90%, 2 -> 99%, 3 -> 99.9%).
fn nines_label(n: f64) -> String {
    if (n - n.round()).abs() > 1e-6 || n < 0.0 {
        return String::new();
    }
    let k = n.round() as i32;
    if k == 0 {
        return "0%".into();
    }
    let p = 100.0 - 100.0 * 10f64.powi(-k);
    format!("{p:.*}%", (k - 2).max(0) as usize)
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("chart: {e:?}")
}

/// One broker's latency percentile curve over its repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyCurve {
    pub broker: String,
    /// Palette index (the broker's position, so colours agree across charts).
    pub color: usize,
    pub repeats: usize,
    /// (percentile %, median, min, max) latency in µs over the repeats.
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// The percentile curve of several repeats: at each point of the "nines" axis (up to what the
/// smallest histogram supports), the median and the range of the repeats' latencies.
pub fn latency_band(hists: &[LatencyHistogram]) -> Vec<(f64, f64, f64, f64)> {
    let Some(n) = hists.iter().map(|h| h.count()).filter(|&n| n > 0).min() else {
        return Vec::new();
    };
    let hists: Vec<&LatencyHistogram> = hists.iter().filter(|h| h.count() > 0).collect();
    let max_nines = (n as f64).log10().clamp(1.0, 6.0);
    let steps = 60;
    (0..=steps)
        .map(|i| {
            let q = 1.0 - 10f64.powf(-max_nines * i as f64 / steps as f64);
            let v: Vec<f64> = hists
                .iter()
                .map(|h| h.value_at_quantile_ns(q) as f64 / 1_000.0)
                .collect();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            (q * 100.0, super::aggregate::median(&v), lo, hi)
        })
        .collect()
}

/// Draws the latency percentile curves of one cell.
pub fn latency_chart(path: &Path, title: &str, curves: &[LatencyCurve]) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x_of = |p: f64| -(1.0 - p / 100.0).max(1e-9).log10();
    let pts: Vec<(f64, f64)> = curves
        .iter()
        .flat_map(|c| {
            c.points
                .iter()
                .flat_map(move |&(p, _, lo, hi)| [(x_of(p), lo.max(1.0)), (x_of(p), hi.max(1.0))])
        })
        .collect();
    let max_x = pts.iter().map(|p| p.0).fold(1.0f64, f64::max).ceil();
    let max_y = pts.iter().map(|p| p.1).fold(10.0f64, f64::max) * 1.5;
    let min_y = pts
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(max_y / 10.0)
        / 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..max_x, (min_y.max(0.5)..max_y).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency from intended send time")
        .x_labels(max_x as usize + 1)
        .x_label_formatter(&|x| nines_label(*x))
        .y_label_formatter(&|y| fmt_us(*y))
        .draw()
        .map_err(err)?;
    for c in curves {
        let color = Palette99::pick(c.color).to_rgba();
        if c.repeats > 1 {
            // The repeats' range: upper edge forward, lower edge back.
            let band: Vec<(f64, f64)> = c
                .points
                .iter()
                .map(|&(p, _, _, hi)| (x_of(p), hi.max(1.0)))
                .chain(
                    c.points
                        .iter()
                        .rev()
                        .map(|&(p, _, lo, _)| (x_of(p), lo.max(1.0))),
                )
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(
                    band,
                    color.mix(0.18).filled(),
                )))
                .map_err(err)?;
        }
        let line: Vec<(f64, f64)> = c
            .points
            .iter()
            .map(|&(p, v, _, _)| (x_of(p), v.max(1.0)))
            .collect();
        let label = if c.repeats > 1 {
            format!("{} (median of {}, band: min-max)", c.broker, c.repeats)
        } else {
            c.broker.clone()
        };
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Cells in order (index, name) and brokers in order of first appearance.
pub fn cells_and_brokers(runs: &[RunRecord]) -> (Vec<(usize, String)>, Vec<String>) {
    let mut cells: Vec<(usize, String)> = Vec::new();
    let mut brokers: Vec<String> = Vec::new();
    for r in runs {
        if !cells.iter().any(|(i, _)| *i == r.cell_index) {
            cells.push((r.cell_index, r.scenario.name.clone()));
        }
        if !brokers.contains(&r.broker.name) {
            brokers.push(r.broker.name.clone());
        }
    }
    cells.sort();
    (cells, brokers)
}

/// Writes every chart of a report into `dir`.
pub fn write_all(dir: &Path, rep: &super::Report) -> Result<ChartFiles, String> {
    let mut files = ChartFiles::default();
    let charts = dir.join("charts");
    std::fs::create_dir_all(&charts).map_err(|e| format!("{}: {e}", charts.display()))?;
    for cell in &rep.cells {
        let curves = cell_curves(rep, cell.index);
        if curves.is_empty() {
            continue;
        }
        let file = format!("charts/latency-{:03}.svg", cell.index);
        latency_chart(
            &dir.join(&file),
            &format!("latency: {}", cell.name),
            &curves,
        )?;
        files.latency.insert(cell.index, file);
    }
    files.families = super::multiples::write_families(dir, rep)?;
    Ok(files)
}

/// The latency curves of one cell, one per broker that has measured repeats.
pub fn cell_curves(rep: &super::Report, cell: usize) -> Vec<LatencyCurve> {
    rep.brokers
        .iter()
        .enumerate()
        .filter_map(|(bi, b)| {
            let hists: Vec<LatencyHistogram> = rep
                .runs
                .iter()
                .filter(|r| r.cell_index == cell && &r.broker.name == b && r.status == Status::Ok)
                .filter_map(|r| r.histogram())
                .collect();
            let points = latency_band(&hists);
            (!points.is_empty()).then(|| LatencyCurve {
                broker: b.clone(),
                color: bi,
                repeats: hists.len(),
                points,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels_count_nines() {
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(5.0), "99.999%");
        assert_eq!(nines_label(1.5), "");
    }

    #[test]
    fn latency_units_are_readable() {
        assert_eq!(fmt_us(85.2), "85 µs");
        assert_eq!(fmt_us(1_250.0), "1.25 ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50 s");
    }

    #[test]
    fn latency_bands_take_the_median_and_range_of_repeats() {
        let hist = |k: u64| {
            let mut h = LatencyHistogram::new();
            for i in 1..=1000u64 {
                h.record(i * k * 1000);
            }
            h
        };
        let band = latency_band(&[hist(1), hist(3), hist(2)]);
        let (p, med, lo, hi) = band[0];
        assert_eq!(p, 0.0);
        assert!((lo - 1.0).abs() < 0.01 && (med - 2.0).abs() < 0.01 && (hi - 3.0).abs() < 0.01);
        assert!(
            band.last().unwrap().0 > 99.8,
            "1000 samples support three nines"
        );
        assert!(band.iter().all(|&(_, m, l, h)| l <= m && m <= h));
        assert!(latency_band(&[]).is_empty());
    }

    #[test]
    fn latency_charts_are_valid_svg_with_every_broker_and_band() {
        let dir = std::env::temp_dir().join(format!("loadgen-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let curve = |k: f64| {
            (0..=20)
                .map(|i| {
                    let v = k * (1.0 + i as f64);
                    (
                        100.0 - 100.0 * 10f64.powf(-(i as f64) / 5.0),
                        v,
                        v * 0.9,
                        v * 1.1,
                    )
                })
                .collect::<Vec<_>>()
        };
        let p = dir.join("lat.svg");
        let c = |b: &str, color, repeats, k| LatencyCurve {
            broker: b.into(),
            color,
            repeats,
            points: curve(k),
        };
        latency_chart(
            &p,
            "latency: x",
            &[c("alpha", 0, 3, 10.0), c("beta", 1, 1, 30.0)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("alpha (median of 3") && svg.contains("beta") && svg.contains("99.9%")
        );
        assert_eq!(
            svg.matches("<polygon").count(),
            1,
            "a band for the repeated broker only"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
