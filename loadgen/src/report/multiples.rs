//! Small multiples per scenario family: throughput and broker CPU per message against the
//! client count, one line per broker, log axes, error bars from the repeats.
//!
//! One axis for every cell put 1.5 M msg/s closed-loop cells beside 100 msg/s cells, which
//! flattened the low-rate ones to nothing. Here each family (p2p, fan-in, fan-out, IoT mix,
//! closed-loop max) gets its own figure, and within it each series (the cell's parameters but
//! the client count) its own panel: the Bevywise / Mishra et al. plot, one line per broker as
//! the clients grow. A hollow marker is an unreliable median (see [`super::aggregate`]).

use std::path::Path;

use plotters::prelude::*;

use super::aggregate::{Figure, Metric};
use super::Report;

/// One point of a line: client count, the median and the repeats' range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub clients: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub unreliable: bool,
}

impl Point {
    fn of(clients: u32, f: &Figure) -> Option<Point> {
        (f.median > 0.0 && f.min > 0.0).then_some(Point {
            clients: clients as f64,
            median: f.median,
            min: f.min,
            max: f.max,
            unreliable: f.unreliable,
        })
    }
}

/// One broker's line in a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub broker: String,
    /// Palette index: the broker's position in the report, so colours agree across figures.
    pub color: usize,
    pub points: Vec<Point>,
}

/// One series of a family.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub lines: Vec<Line>,
}

/// Families in the order the figures are shown.
pub const FAMILIES: [&str; 5] = ["p2p", "fan-in", "fan-out", "iot", "max"];

/// The panels of `family` for `metric`: one per series, in order of first appearance.
pub fn panels(rep: &Report, family: &str, metric: Metric) -> Vec<Panel> {
    let mut out: Vec<Panel> = Vec::new();
    for cell in rep.cells.iter().filter(|c| c.family == family) {
        let pi = match out.iter().position(|p| p.title == cell.series) {
            Some(i) => i,
            None => {
                out.push(Panel {
                    title: cell.series.clone(),
                    lines: Vec::new(),
                });
                out.len() - 1
            }
        };
        for (bi, b) in rep.brokers.iter().enumerate() {
            let Some(pt) = cell
                .broker(b)
                .and_then(|bc| bc.figure(metric))
                .and_then(|f| Point::of(cell.scenario.clients, f))
            else {
                continue;
            };
            let lines = &mut out[pi].lines;
            match lines.iter_mut().find(|l| &l.broker == b) {
                Some(l) => l.points.push(pt),
                None => lines.push(Line {
                    broker: b.clone(),
                    color: bi,
                    points: vec![pt],
                }),
            }
        }
    }
    for p in &mut out {
        for l in &mut p.lines {
            l.points.sort_by(|a, b| a.clients.total_cmp(&b.clients));
        }
    }
    out.retain(|p| !p.lines.is_empty());
    out
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("chart: {e:?}")
}

/// A log range around `lo..hi` with some room, never empty.
fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() && lo > 0.0 {
        (lo, hi.max(lo))
    } else {
        (1.0, 10.0)
    };
    if hi / lo < 4.0 {
        let mid = (lo * hi).sqrt();
        (mid / 2.5, mid * 2.5)
    } else {
        (lo / 1.4, hi * 1.4)
    }
}

fn fmt_axis(v: f64) -> String {
    let (x, unit) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let mut s = format!("{x:.3}");
    // Drop trailing zeros of the fraction only ("10.000" -> "10", "2.500" -> "2.5").
    while s.contains('.') && (s.ends_with('0') || s.ends_with('.')) {
        s.pop();
    }
    s + unit
}

/// Draws the panels of one family and metric into `path`.
pub fn draw(path: &Path, title: &str, y_desc: &str, panels: &[Panel]) -> Result<(), String> {
    let cols = panels.len().clamp(1, 3);
    let rows = panels.len().div_ceil(cols).max(1);
    let size = ((cols * 440).max(720) as u32, (rows * 320 + 40) as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            &format!("{title} (hollow: unreliable; bars: min-max of repeats)"),
            ("sans-serif", 16),
        )
        .map_err(err)?;
    let areas = root.split_evenly((rows, cols));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let pts = || panel.lines.iter().flat_map(|l| l.points.iter());
        let (x0, x1) = log_range(
            pts().map(|p| p.clients).fold(f64::INFINITY, f64::min),
            pts().map(|p| p.clients).fold(0.0, f64::max),
        );
        let (y0, y1) = log_range(
            pts().map(|p| p.min).fold(f64::INFINITY, f64::min),
            pts().map(|p| p.max).fold(0.0, f64::max),
        );
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(62)
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("clients")
            .y_desc(y_desc)
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(&|x| fmt_axis(*x))
            .y_label_formatter(&|y| fmt_axis(*y))
            .draw()
            .map_err(err)?;
        for line in &panel.lines {
            let color = Palette99::pick(line.color).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    line.points.iter().map(|p| (p.clients, p.median)),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(line.broker.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    line.points.iter().filter(|p| p.max > p.min).map(|p| {
                        ErrorBar::new_vertical(p.clients, p.min, p.median, p.max, color, 8)
                    }),
                )
                .map_err(err)?;
            chart
                .draw_series(line.points.iter().map(|p| {
                    let style = if p.unreliable {
                        WHITE.filled()
                    } else {
                        color.filled()
                    };
                    Circle::new((p.clients, p.median), 4, style)
                }))
                .map_err(err)?;
            // The ring of a hollow marker, in the line's colour.
            chart
                .draw_series(
                    line.points
                        .iter()
                        .filter(|p| p.unreliable)
                        .map(|p| Circle::new((p.clients, p.median), 4, color.stroke_width(2))),
                )
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// The two metrics drawn, with file stem, title and axis label.
const DRAWN: [(Metric, &str, &str, &str); 2] = [
    (
        Metric::Throughput,
        "throughput",
        "delivered messages per second",
        "msgs/s",
    ),
    (
        Metric::CpuUsPerMsg,
        "cpu_per_msg",
        "broker CPU µs per message, lower is better",
        "CPU µs / msg",
    ),
];

/// Writes `charts/<family>-throughput.svg` and `charts/<family>-cpu_per_msg.svg` for every
/// family with data; returns (family, files) in [`FAMILIES`] order.
pub fn write_families(dir: &Path, rep: &Report) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut out = Vec::new();
    for family in FAMILIES {
        let mut files = Vec::new();
        for (metric, stem, title, y_desc) in DRAWN {
            let ps = panels(rep, family, metric);
            if ps.is_empty() {
                continue;
            }
            let file = format!("charts/{family}-{stem}.svg");
            draw(&dir.join(&file), &format!("{family}: {title}"), y_desc, &ps)?;
            files.push(file);
        }
        if !files.is_empty() {
            out.push((family.to_string(), files));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::json::RunRecord;
    use crate::report::testdata::record;
    use crate::scenario::{Mode, Shape};

    /// p2p at 10 and 100 clients (one series), fan-in at 50, and a closed-loop cell; two
    /// brokers, two repeats; beta's p2p c100 CPU comes from too few ticks.
    fn runs() -> Vec<RunRecord> {
        let mut out = Vec::new();
        let cells = [
            (Shape::P2p, Mode::Rate, 10, 100.0),
            (Shape::P2p, Mode::Rate, 100, 1_000.0),
            (Shape::FanIn, Mode::Rate, 50, 500.0),
            (Shape::P2p, Mode::Max, 4, 1_500_000.0),
        ];
        for (ci, (shape, mode, clients, tp)) in cells.into_iter().enumerate() {
            for rep in 0..2u32 {
                for (b, k) in [("alpha", 1.0), ("beta", 0.8)] {
                    let mut r = record(ci, b, 100, tp * k + rep as f64, 2.0 / k);
                    r.scenario.shape = shape;
                    r.scenario.mode = mode;
                    r.scenario.clients = clients;
                    r.repeat = rep;
                    if ci == 1 && b == "beta" {
                        r.signal.little_cpu = Some("3 ticks".into());
                    }
                    out.push(r);
                }
            }
        }
        out
    }

    #[test]
    fn families_split_cells_and_lines_grow_with_clients() {
        let runs = runs();
        let rep = Report::new(&runs, None).unwrap();
        let p2p = panels(&rep, "p2p", Metric::Throughput);
        assert_eq!(p2p.len(), 1, "one series");
        assert_eq!(p2p[0].lines.len(), 2, "one line per broker");
        let xs: Vec<f64> = p2p[0].lines[0].points.iter().map(|p| p.clients).collect();
        assert_eq!(
            xs,
            [10.0, 100.0],
            "the closed-loop cell is not on this axis"
        );
        let max = panels(&rep, "max", Metric::Throughput);
        assert_eq!(max[0].lines[0].points[0].median, 1_500_000.5);
        let cpu = panels(&rep, "p2p", Metric::CpuUsPerMsg);
        let beta = &cpu[0].lines[1];
        assert_eq!(beta.broker, "beta");
        assert_eq!(
            beta.points.iter().map(|p| p.unreliable).collect::<Vec<_>>(),
            [false, true]
        );
        assert!(panels(&rep, "iot", Metric::Throughput).is_empty());
    }

    #[test]
    fn family_figures_are_svg_files_with_log_axes_error_bars_and_hollow_markers() {
        let runs = runs();
        let rep = Report::new(&runs, None).unwrap();
        let dir = std::env::temp_dir().join(format!("loadgen-multiples-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("charts")).unwrap();
        let fams = write_families(&dir, &rep).unwrap();
        let names: Vec<&str> = fams.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["p2p", "fan-in", "max"]);
        let svg = std::fs::read_to_string(dir.join("charts/p2p-cpu_per_msg.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("alpha") && svg.contains("beta"));
        assert!(svg.contains("clients") && svg.contains("hollow: unreliable"));
        // beta's unreliable point: a white-filled circle.
        let circles: Vec<&str> = svg
            .split("<circle")
            .skip(1)
            .filter_map(|c| c.split("/>").next())
            .collect();
        assert_eq!(circles.len(), 5, "4 markers and one ring");
        assert_eq!(
            circles
                .iter()
                .filter(|c| c.contains(r##"fill="#FFFFFF""##))
                .count(),
            1,
            "one hollow marker"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn axis_labels_keep_their_zeros() {
        assert_eq!(fmt_axis(10.0), "10");
        assert_eq!(fmt_axis(100.0), "100");
        assert_eq!(fmt_axis(2.5), "2.5");
        assert_eq!(fmt_axis(0.125), "0.125");
        assert_eq!(fmt_axis(20_000.0), "20k");
        assert_eq!(fmt_axis(1_500_000.0), "1.5M");
    }

    #[test]
    fn log_ranges_are_never_empty() {
        let (a, b) = log_range(100.0, 100.0);
        assert!(a < 100.0 && b > 100.0);
        let (a, b) = log_range(1.0, 1e6);
        assert!(a < 1.0 && b > 1e6);
        let (a, b) = log_range(f64::INFINITY, 0.0);
        assert!(a > 0.0 && a < b && b.is_finite());
    }
}
