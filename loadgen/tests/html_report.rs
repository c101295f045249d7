//! The HTML report in a real browser: a report is generated from a small fixture (runs of a
//! real suite, two brokers x three repeats, in `tests/fixtures/report/runs`, with one failure
//! and one straddling ratio edited in), loaded by headless Chromium (Debian's `chromium`), and
//! the DOM after its script ran must hold the heat map and the plots, and no script error.
//! Skipped, with a message, only when `chromium` is not installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loadgen::report::{self, json};

/// The first Chromium binary on PATH.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs chromium headless with `args`, killing it (by its PID) after `limit`; returns stdout.
fn run_chromium(bin: &Path, args: &[String], limit: Duration) -> String {
    let out = std::env::temp_dir().join(format!("loadgen-chromium-{}.out", std::process::id()));
    let file = std::fs::File::create(&out).unwrap();
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    text
}

/// Copies the fixture runs into a fresh results directory, with one failed run and a cell
/// whose CPU ratios straddle 1.
fn fixture_dir() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/runs");
    let dir = std::env::temp_dir().join(format!("loadgen-html-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("runs")).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        let mut rec: json::RunRecord = serde_json::from_str(&text).unwrap();
        if rec.cell_index == 0 {
            // CPU per message: mosquitto 10 in every repeat, midge 9, 11, 9.5.
            let v = match (rec.broker.name.as_str(), rec.repeat) {
                ("mosquitto", _) => 10.0,
                (_, 0) => 9.0,
                (_, 1) => 11.0,
                _ => 9.5,
            };
            rec.broker_cpu.as_mut().unwrap().us_per_msg = v;
            rec.signal = Default::default();
        }
        if rec.cell_index == 1 && rec.broker.name == "midge" && rec.repeat == 2 {
            rec.status = json::Status::Failed;
            rec.lost = 3;
            rec.failures
                .push("lost 3 of 1000 expected deliveries: QoS 1 must not lose messages".into());
        }
        json::write(&dir, &rec).unwrap();
    }
    dir
}

#[test]
fn the_html_report_renders_in_chromium_with_heat_map_plots_and_no_script_error() {
    let dir = fixture_dir();
    let n = report::regenerate(&dir, None).unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    // Nothing fetched (the SVGs' xmlns names a namespace; it is not loaded).
    for remote in [
        "src=\"http",
        "href=\"http",
        "<link",
        "@import",
        "url(http",
        "src=\"//",
    ] {
        assert!(!html.contains(remote), "self-contained, yet has {remote}");
    }
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("(report.html)"), "the summary links the page");

    let Some(bin) = chromium() else {
        eprintln!(
            "SKIPPED: chromium is not installed (apt-get install -y chromium); the HTML report was \
             generated but not loaded in a browser"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    };
    let url = format!("file://{}", dir.join("report.html").display());
    let dom = run_chromium(&bin, &["--dump-dom".into(), url], Duration::from_secs(120));
    assert!(dom.contains("</html>"), "a DOM came back: {dom:.300}");
    assert!(
        !dom.contains("id=\"report-error\""),
        "script error: {}",
        dom.split("id=\"report-error\"")
            .nth(1)
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>()
    );
    assert!(
        dom.contains("id=\"report-ok\""),
        "the script ran to the end"
    );

    // The heat map: one row per cell, one column per broker, drawn by the script.
    let runs = json::read_dir(&dir).unwrap();
    let cells = runs.iter().map(|r| r.cell_index).max().unwrap() + 1;
    let heat = dom
        .split("id=\"heatmap\"")
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    assert_eq!(heat.matches("<td").count(), cells * 2, "{heat:.500}");
    assert!(
        heat.contains("class=\"nodiff\">no difference"),
        "the straddling ratio is neutral: {heat:.800}"
    );
    assert!(heat.contains("class=\"bad\">FAILED"), "the failure is red");
    assert!(heat.contains(">baseline<"));
    // Plots: the small multiples and one latency chart per cell, all inline.
    let svgs = dom.matches("<svg").count();
    assert!(
        svgs >= cells + 2,
        "{svgs} inline SVG plots for {cells} cells"
    );
    assert!(dom.contains("lost 3 of 1000"), "the failure is spelled out");
    assert!(n >= cells * 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
