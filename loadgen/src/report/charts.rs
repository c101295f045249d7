//! SVG charts with `plotters` (SVG backend only: no font files or image libraries needed).
//!
//! - `latency-NNN.svg` per cell: latency percentile curves, one line per broker, on the usual
//!   HdrHistogram axes: x is the percentile on a "number of nines" log scale (90%, 99%, 99.9%
//!   are equally spaced) so the tail is visible, y is latency on a log scale.
//! - `throughput.svg`: delivered messages per second per cell, one bar per broker.
//! - `cpu_per_msg.svg`: broker CPU microseconds per delivered message, same layout.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::json::{RunRecord, Status};

/// Names of the chart files written, relative to the results directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChartFiles {
    /// The HTML report, when written.
    pub html: Option<String>,
    /// Per scenario family, its figures.
    pub families: Vec<(String, Vec<String>)>,
    pub throughput: Option<String>,
    pub cpu_per_msg: Option<String>,
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

/// Draws the latency percentile curves of one cell.
pub fn latency_chart(
    path: &Path,
    title: &str,
    curves: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let pts: Vec<(f64, f64)> = curves
        .iter()
        .flat_map(|(_, c)| {
            c.iter()
                .map(|&(p, v)| (-(1.0 - p / 100.0).max(1e-9).log10(), v.max(1.0)))
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
    for (i, (name, c)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let line: Vec<(f64, f64)> = c
            .iter()
            .map(|&(p, v)| (-(1.0 - p / 100.0).max(1e-9).log10(), v.max(1.0)))
            .collect();
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
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

/// A grouped bar chart: one group per category, one bar per series (missing values: no bar).
pub fn bar_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> Result<(), String> {
    let n = categories.len().max(1);
    let width = (160 + 34 * n * series.len().max(1)).clamp(700, 6000) as u32;
    let root = SVGBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max_y = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b))
        .max(1e-9)
        * 1.15;
    let longest = categories.iter().map(|c| c.len()).max().unwrap_or(4) as u32;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size((longest * 7 + 20).min(260))
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n as f64, 0f64..max_y)
        .map_err(err)?;
    let cats = categories.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_desc)
        .x_labels(2 * n + 1)
        .x_label_style(
            ("sans-serif", 12)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .x_label_formatter(&move |x| {
            let i = x.floor() as usize;
            if (x.fract() - 0.5).abs() < 1e-6 && i < cats.len() {
                cats[i].clone()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| {
            if *y >= 1e6 {
                format!("{:.1}M", y / 1e6)
            } else if *y >= 1e3 {
                format!("{:.0}k", y / 1e3)
            } else {
                format!("{y:.2}")
            }
        })
        .draw()
        .map_err(err)?;
    let k = series.len().max(1) as f64;
    let bar = 0.8 / k;
    for (si, (name, vals)) in series.iter().enumerate() {
        let color = Palette99::pick(si).to_rgba();
        chart
            .draw_series(vals.iter().enumerate().filter_map(|(ci, v)| {
                let v = (*v)?;
                let x0 = ci as f64 + 0.1 + si as f64 * bar;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + bar * 0.92, v)],
                    color.filled(),
                ))
            }))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
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

/// Writes every chart for `runs` into `dir`.
pub fn write_all(dir: &Path, rep: &super::Report) -> Result<ChartFiles, String> {
    let runs = rep.runs;
    let (cells, brokers) = cells_and_brokers(runs);
    let find = |ci: usize, b: &str| {
        runs.iter()
            .find(|r| r.cell_index == ci && r.broker.name == b && r.status != Status::Skipped)
    };
    let mut files = ChartFiles::default();
    let charts = dir.join("charts");
    std::fs::create_dir_all(&charts).map_err(|e| format!("{}: {e}", charts.display()))?;
    for (ci, name) in &cells {
        let curves: Vec<(String, Vec<(f64, f64)>)> = brokers
            .iter()
            .filter_map(|b| {
                let c = find(*ci, b)?.histogram()?.percentile_curve();
                (!c.is_empty()).then(|| (b.clone(), c))
            })
            .collect();
        if curves.is_empty() {
            continue;
        }
        let file = format!("charts/latency-{ci:03}.svg");
        latency_chart(&dir.join(&file), &format!("latency: {name}"), &curves)?;
        files.latency.insert(*ci, file);
    }
    let names: Vec<String> = cells.iter().map(|(_, n)| n.clone()).collect();
    let series = |f: &dyn Fn(&RunRecord) -> Option<f64>| -> Vec<(String, Vec<Option<f64>>)> {
        brokers
            .iter()
            .map(|b| {
                (
                    b.clone(),
                    cells
                        .iter()
                        .map(|(ci, _)| find(*ci, b).and_then(f))
                        .collect(),
                )
            })
            .collect()
    };
    let tp = series(&|r| Some(r.throughput_msgs_s));
    if tp.iter().any(|(_, v)| v.iter().any(Option::is_some)) {
        bar_chart(
            &dir.join("charts/throughput.svg"),
            "delivered messages per second",
            "msgs/s",
            &names,
            &tp,
        )?;
        files.throughput = Some("charts/throughput.svg".into());
    }
    let cpu = series(&|r| r.broker_cpu.map(|c| c.us_per_msg));
    if cpu.iter().any(|(_, v)| v.iter().any(Option::is_some)) {
        bar_chart(
            &dir.join("charts/cpu_per_msg.svg"),
            "broker CPU per delivered message (lower is better)",
            "CPU µs / msg",
            &names,
            &cpu,
        )?;
        files.cpu_per_msg = Some("charts/cpu_per_msg.svg".into());
    }
    let all: Vec<String> = [&files.throughput, &files.cpu_per_msg]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    files.families.push(("all cells".into(), all));
    Ok(files)
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
    fn charts_are_valid_svg_with_every_series() {
        let dir = std::env::temp_dir().join(format!("loadgen-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let curve = |k: f64| {
            (0..=20)
                .map(|i| {
                    (
                        100.0 - 100.0 * 10f64.powf(-(i as f64) / 5.0),
                        k * (1.0 + i as f64),
                    )
                })
                .collect::<Vec<_>>()
        };
        let p = dir.join("lat.svg");
        latency_chart(
            &p,
            "latency: x",
            &[("alpha".into(), curve(10.0)), ("beta".into(), curve(30.0))],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("alpha") && svg.contains("beta") && svg.contains("99.9%"));
        let p = dir.join("bars.svg");
        let cats = vec!["cell-a".to_string(), "cell-b".to_string()];
        bar_chart(
            &p,
            "tp",
            "msgs/s",
            &cats,
            &[
                ("alpha".into(), vec![Some(5.0), None]),
                ("beta".into(), vec![Some(7.0), Some(2.0)]),
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.contains("cell-a") && svg.contains("cell-b") && svg.contains("beta"));
        // Three bars (one value missing) plus legend swatches, drawn as rects.
        assert!(svg.matches("<rect").count() >= 3 + 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
