//! Output: one JSON file per run ([`json`]), a Markdown summary comparing brokers
//! ([`markdown`]) and SVG charts ([`charts`]). The Markdown and the charts are computed from the
//! JSON files alone, so `loadgen report DIR` regenerates them from a results directory.

pub mod charts;
pub mod json;
pub mod markdown;

use std::path::Path;

/// Rewrites `summary.md` and the charts of `dir` from its JSON files; returns the number of
/// runs read.
pub fn regenerate(dir: &Path) -> Result<usize, String> {
    let runs = json::read_dir(dir)?;
    if runs.is_empty() {
        return Err(format!(
            "{}: no run JSON files (runs/*.json)",
            dir.display()
        ));
    }
    let charts = charts::write_all(dir, &runs)?;
    let md = markdown::summary(&runs, &charts);
    std::fs::write(dir.join("summary.md"), md)
        .map_err(|e| format!("{}: {e}", dir.join("summary.md").display()))?;
    Ok(runs.len())
}
