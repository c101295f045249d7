//! Output: one JSON file per run ([`json`]); the repeats of each cell folded into medians,
//! ranges and ratios ([`aggregate`]), written as `summary.json`; a Markdown summary
//! ([`markdown`]), SVG charts ([`charts`], [`multiples`]) and one self-contained HTML page
//! with all of it ([`html`]). Everything but the per-run JSON is computed from
//! those files alone, so `loadgen report DIR` regenerates it from a results directory.

pub mod aggregate;
pub mod charts;
pub mod html;
pub mod json;
pub mod markdown;
pub mod multiples;
#[cfg(test)]
pub(crate) mod testdata;

use std::path::Path;

use serde::Serialize;

use aggregate::{BrokerRatios, CellSummary};
use json::{MachineInfo, RunRecord};

use crate::signal::SignalRule;

/// The runs of a results directory and what is computed from them.
pub struct Report<'a> {
    pub runs: &'a [RunRecord],
    pub cells: Vec<CellSummary>,
    /// Brokers in order of first appearance.
    pub brokers: Vec<String>,
    /// The broker ratios are to.
    pub baseline: String,
}

impl<'a> Report<'a> {
    /// Folds `runs`; ratios to `baseline`, or to the first broker.
    pub fn new(runs: &'a [RunRecord], baseline: Option<&str>) -> Result<Report<'a>, String> {
        let rule = runs.first().map(|r| r.signal_rule).unwrap_or_default();
        let (cells, brokers) = aggregate::summarize(runs, &rule);
        let baseline = match baseline {
            Some(b) if brokers.iter().any(|x| x == b) => b.to_string(),
            Some(b) => {
                return Err(format!(
                    "baseline {b:?} is not among the brokers {brokers:?}"
                ))
            }
            None => brokers.first().cloned().unwrap_or_default(),
        };
        Ok(Report {
            runs,
            cells,
            brokers,
            baseline,
        })
    }
}

/// `summary.json`: what the Markdown shows, for programs.
#[derive(Serialize)]
struct SummaryJson<'a> {
    schema: u32,
    suite: &'a str,
    command: &'a str,
    machine: &'a MachineInfo,
    signal_rule: SignalRule,
    baseline: &'a str,
    brokers: &'a [String],
    cells: Vec<CellJson<'a>>,
}

#[derive(Serialize)]
struct CellJson<'a> {
    #[serde(flatten)]
    cell: &'a CellSummary,
    /// Each broker's ratios to the baseline.
    ratios: Vec<BrokerRatios>,
}

/// The `summary.json` text of a report.
pub fn summary_json(rep: &Report) -> Result<String, String> {
    let first = rep.runs.first().ok_or("no runs")?;
    let s = SummaryJson {
        schema: json::SCHEMA,
        suite: &first.suite,
        command: &first.command,
        machine: &first.machine,
        signal_rule: first.signal_rule,
        baseline: &rep.baseline,
        brokers: &rep.brokers,
        cells: rep
            .cells
            .iter()
            .map(|c| CellJson {
                cell: c,
                ratios: c.ratios(&rep.baseline),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&s).map_err(|e| e.to_string())
}

/// Rewrites `summary.md`, `summary.json`, `report.html` and the charts of `dir` from its JSON files, with
/// ratios to `baseline` (default: the first broker); returns the number of runs read.
pub fn regenerate(dir: &Path, baseline: Option<&str>) -> Result<usize, String> {
    let runs = json::read_dir(dir)?;
    if runs.is_empty() {
        return Err(format!(
            "{}: no run JSON files (runs/*.json)",
            dir.display()
        ));
    }
    let rep = Report::new(&runs, baseline)?;
    let mut charts = charts::write_all(dir, &rep)?;
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    write("summary.json", summary_json(&rep)? + "\n")?;
    write("report.html", html::page(dir, &rep, &charts))?;
    charts.html = Some("report.html".into());
    write("summary.md", markdown::summary(&rep, &charts))?;
    Ok(runs.len())
}
