//! `report.html`: one self-contained page per run of loadgen (inline SVG, CSS and JS; nothing
//! fetched), so it can be mailed, attached to CI or opened offline.
//!
//! From the top: what was run (command, machine, broker versions, the signal rule), a heat map
//! of ratios (cells x brokers, coloured by CPU per message, p99 or throughput against a baseline
//! chosen on the page; "no difference" is neutral grey, unreliable ratios are striped), the
//! small multiples per family, then per cell the figures with their range, loss, duplicates and
//! failures in red, and the latency percentile curves with the repeats' band. The generated
//! broker configs close the page.
//!
//! The heat map is drawn by the page's script from data embedded as JSON (the ratios for every
//! possible baseline are computed here, where they are tested). The script writes
//! `<div id="report-ok">` when it has drawn everything, and `window.onerror` writes
//! `<div id="report-error">`, so a headless browser can tell a working page from a broken one.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde_json::json;

use super::aggregate::{BrokerCell, Figure, Metric};
use super::charts::{fmt_us, ChartFiles};
use super::markdown::fmt_ratio;
use super::Report;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The heat map's data: cells, brokers, and the ratios for every baseline.
fn data(rep: &Report) -> serde_json::Value {
    let cells: Vec<serde_json::Value> = rep
        .cells
        .iter()
        .map(|c| {
            let brokers: Vec<serde_json::Value> = c
                .brokers
                .iter()
                .map(|b| {
                    json!({
                        "broker": b.broker,
                        "runs": b.runs,
                        "failed": b.failed,
                        "skipped": b.skipped,
                        "lost": b.lost,
                        "duplicates": b.duplicates,
                    })
                })
                .collect();
            json!({"index": c.index, "name": c.name, "family": c.family, "brokers": brokers})
        })
        .collect();
    let mut ratios = BTreeMap::new();
    for b in &rep.brokers {
        let per_cell: Vec<_> = rep.cells.iter().map(|c| c.ratios(b)).collect();
        ratios.insert(b.clone(), per_cell);
    }
    let metrics: Vec<serde_json::Value> = Metric::ALL
        .iter()
        .map(|m| json!({"key": m.key(), "title": m.title(), "higher_is_better": m.higher_is_better()}))
        .collect();
    json!({
        "baseline": rep.baseline,
        "brokers": rep.brokers,
        "metrics": metrics,
        "cells": cells,
        "ratios": ratios,
    })
}

/// An SVG file of the results directory, inline (its own XML prologue dropped).
fn inline_svg(dir: &Path, file: &str) -> String {
    match std::fs::read_to_string(dir.join(file)) {
        Ok(s) => {
            let start = s.find("<svg").unwrap_or(0);
            format!("<div class=\"chart\">{}</div>", &s[start..])
        }
        Err(e) => format!(
            "<p class=\"bad\">{}: {}</p>",
            esc(file),
            esc(&e.to_string())
        ),
    }
}

fn fig(f: Option<&Figure>, fmt: &dyn Fn(f64) -> String) -> String {
    let Some(f) = f else {
        return "<td class=\"na\">not measured</td>".into();
    };
    let mut s = esc(&fmt(f.median));
    if f.values.len() > 1 {
        let _ = write!(
            s,
            " <span class=\"range\">[{}–{}]</span>",
            esc(&fmt(f.min)),
            esc(&fmt(f.max))
        );
    }
    if f.unreliable {
        format!(
            "<td class=\"unreliable\" title=\"{}\">{s} ⚠</td>",
            esc(&f.reasons.join("; "))
        )
    } else {
        format!("<td>{s}</td>")
    }
}

fn broker_row(html: &mut String, b: &BrokerCell, ratio: &str) {
    if b.runs == 0 {
        let _ = writeln!(
            html,
            "<tr><th>{}</th><td colspan=\"9\" class=\"na\">skipped: {}</td></tr>",
            esc(&b.broker),
            esc(b.skipped.as_deref().unwrap_or(""))
        );
        return;
    }
    let red = |n: u64| {
        if n > 0 {
            format!("<td class=\"bad\">{n}</td>")
        } else {
            "<td>0</td>".into()
        }
    };
    let result = if b.failed > 0 {
        format!("<td class=\"bad\">FAILED ({} of {})</td>", b.failed, b.runs)
    } else if b.backlog > 0 {
        "<td class=\"warn\">ok, backlog</td>".into()
    } else {
        "<td>ok</td>".into()
    };
    let _ = writeln!(
        html,
        "<tr><th>{}</th><td>{}</td>{}{}{}{}{}{}{}{}</tr>",
        esc(&b.broker),
        b.runs,
        fig(b.throughput.as_ref(), &|v| format!("{v:.0}")),
        fig(b.p50.as_ref(), &fmt_us),
        fig(b.p99.as_ref(), &fmt_us),
        fig(b.cpu_us_per_msg.as_ref(), &|v| format!("{v:.2}")),
        red(b.lost),
        red(b.duplicates),
        result,
        ratio
    );
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1500px; }
h1 { margin-top: 0; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
pre { background: #f4f4f4; padding: .6em; overflow-x: auto; white-space: pre-wrap; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: right; }
th { background: #f0f0f0; text-align: left; }
.range { color: #777; font-size: 90%; }
.bad { background: #fdd; color: #a00; font-weight: bold; }
.warn { background: #fff3cd; }
.na { color: #888; text-align: center; }
.unreliable { background: repeating-linear-gradient(45deg, #fff, #fff 5px, #eee 5px, #eee 10px); }
#heatmap td { min-width: 7.5em; text-align: center; }
#heatmap td.nodiff { background: #e4e4e4; color: #444; }
#heatmap td.hatched { background-image: repeating-linear-gradient(45deg, transparent, transparent 5px, rgba(0,0,0,.12) 5px, rgba(0,0,0,.12) 10px); }
.legend span { display: inline-block; padding: .1em .6em; margin-right: .4em; border: 1px solid #ccc; }
.chart svg { max-width: 100%; height: auto; }
.controls { margin: .6em 0; } .controls label { margin-right: 1.2em; }
#report-error { background: #a00; color: #fff; padding: .5em; }
"#;

const SCRIPT: &str = r#"
window.onerror = function (msg, src, line) {
  var d = document.getElementById('report-error') || document.createElement('div');
  d.id = 'report-error';
  d.textContent = 'report script error: ' + msg + ' (line ' + line + ')';
  document.body.insertBefore(d, document.body.firstChild);
};
(function () {
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var baseSel = document.getElementById('baseline'), metricSel = document.getElementById('metric');
  data.brokers.forEach(function (b) {
    var o = document.createElement('option'); o.value = b; o.textContent = b;
    if (b === data.baseline) o.selected = true;
    baseSel.appendChild(o);
  });
  data.metrics.forEach(function (m) {
    var o = document.createElement('option'); o.value = m.key; o.textContent = m.title;
    metricSel.appendChild(o);
  });
  function fmt(x) { return x.toFixed(2); }
  function colour(r, higherIsBetter) {
    var l = Math.log(r) / Math.LN2, better = higherIsBetter ? l > 0 : l < 0;
    var t = Math.min(1, Math.abs(l) / 2);
    return better ? 'hsl(130,55%,' + (94 - 44 * t) + '%)' : 'hsl(0,70%,' + (94 - 40 * t) + '%)';
  }
  function draw() {
    var base = baseSel.value, key = metricSel.value;
    var metric = data.metrics.filter(function (m) { return m.key === key; })[0];
    var table = document.getElementById('heatmap');
    table.textContent = '';
    var head = table.insertRow(); var th = document.createElement('th');
    th.textContent = 'cell \\ broker'; head.appendChild(th);
    data.brokers.forEach(function (b) {
      var h = document.createElement('th'); h.textContent = b + (b === base ? ' (baseline)' : '');
      head.appendChild(h);
    });
    data.cells.forEach(function (cell, ci) {
      var row = table.insertRow();
      var name = document.createElement('th');
      var a = document.createElement('a'); a.href = '#cell-' + cell.index; a.textContent = cell.name;
      name.appendChild(a); row.appendChild(name);
      var ratios = data.ratios[base][ci];
      data.brokers.forEach(function (b) {
        var td = row.insertCell(), info = cell.brokers.filter(function (x) { return x.broker === b; })[0];
        var r = ratios.filter(function (x) { return x.broker === b; })[0];
        r = r ? r[key] : null;
        if (!info || info.runs === 0) { td.textContent = 'skipped'; td.className = 'na'; return; }
        if (info.failed > 0) { td.textContent = 'FAILED'; td.className = 'bad'; return; }
        if (!r) { td.textContent = 'n/m'; td.className = 'na'; return; }
        var cls = [];
        if (b === base) { td.textContent = 'baseline'; cls.push('nodiff'); }
        else if (r.verdict === 'no_difference') {
          td.textContent = 'no difference'; cls.push('nodiff');
          td.title = 'repeats ' + fmt(r.lo) + '–' + fmt(r.hi) + '×';
        } else {
          td.textContent = fmt(r.median) + '×' + (r.verdict === 'single_run' ? ' (1 run)' : '');
          td.title = 'repeats ' + fmt(r.lo) + '–' + fmt(r.hi) + '×';
          td.style.backgroundColor = colour(r.median, metric.higher_is_better);
        }
        if (r.unreliable) { cls.push('hatched'); td.textContent += ' ⚠'; }
        if (info.lost > 0 || info.duplicates > 0) {
          td.textContent += ' (lost ' + info.lost + ', dup ' + info.duplicates + ')';
        }
        td.className = cls.join(' ');
      });
    });
  }
  baseSel.onchange = draw; metricSel.onchange = draw;
  draw();
  var ok = document.createElement('div'); ok.id = 'report-ok'; ok.hidden = true;
  ok.textContent = document.querySelectorAll('#heatmap td').length + ' heat map cells, ' +
    document.querySelectorAll('.chart svg').length + ' plots';
  document.body.appendChild(ok);
})();
"#;

/// The page for `rep`, whose charts are in `dir` (`charts` lists them).
pub fn page(dir: &Path, rep: &Report, charts: &ChartFiles) -> String {
    let mut h = String::new();
    let first = &rep.runs[0];
    let title = format!("loadgen results: {}", first.suite);
    let _ = writeln!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(&title)
    );
    let _ = writeln!(h, "<h1>{}</h1>", esc(&title));
    let m = &first.machine;
    let _ = writeln!(
        h,
        "<p>Command:</p><pre id=\"command\">{}</pre><p>Machine: {} ({} cores, {:.1} GiB RAM), Linux {}; loadgen {}. Broker and loadgen share this machine.</p>",
        esc(&first.command),
        esc(if m.cpu_model.is_empty() { "unknown CPU" } else { &m.cpu_model }),
        m.cores,
        m.mem_total_kib as f64 / 1048576.0,
        esc(&m.kernel),
        esc(&first.loadgen_version)
    );
    let _ = writeln!(
        h,
        "<table><tr><th>broker</th><th>version</th><th>started by loadgen</th></tr>"
    );
    for b in &rep.brokers {
        let r = rep
            .runs
            .iter()
            .find(|r| &r.broker.name == b && !r.broker.version.is_empty());
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            esc(b),
            esc(&r.map_or("(not run)".into(), |r| r.broker_label())),
            r.map_or("", |r| if r.broker.managed {
                "yes"
            } else {
                "no (external)"
            })
        );
    }
    let _ = writeln!(h, "</table>");
    let failed: Vec<_> = rep.runs.iter().filter(|r| !r.failures.is_empty()).collect();
    if !failed.is_empty() {
        let _ = writeln!(
            h,
            "<div class=\"bad\" id=\"failures\"><p>{} run(s) FAILED:</p><ul>",
            failed.len()
        );
        for r in failed {
            for f in &r.failures {
                let _ = writeln!(
                    h,
                    "<li>{} @ {} (repeat {}): {}</li>",
                    esc(&r.scenario.name),
                    esc(&r.broker.name),
                    r.repeat + 1,
                    esc(f)
                );
            }
        }
        let _ = writeln!(h, "</ul></div>");
    }
    let rule = &first.signal_rule;
    let _ = writeln!(
        h,
        "<h2>How to read</h2><p>Every figure is the <b>median over repeats</b>, with the repeats' <span class=\"range\">[min–max]</span>. \
         A figure is <b>unreliable</b> (⚠, striped) when a repeat measured fewer than {} deliveries or less than {} ms of broker CPU \
         ({} clock ticks where schedstat is missing), or when the repeats spread more than {:.0}% of the median. \
         A ratio is computed per repeat (brokers alternate between repeats); when the repeats' ratios straddle 1.0 it is \
         <b>no difference</b> (grey), however far the median is from 1. Green is better than the baseline, red worse, \
         deeper for larger ratios (full colour at 4×).</p>",
        rule.min_messages,
        rule.min_broker_cpu_ms,
        rule.min_cpu_ticks,
        100.0 * rule.max_spread
    );
    let _ = writeln!(
        h,
        "<h2>Ratios to the baseline</h2><div class=\"controls\"><label>baseline <select id=\"baseline\"></select></label>\
         <label>figure <select id=\"metric\"></select></label></div>\
         <p class=\"legend\"><span style=\"background:hsl(130,55%,60%)\">better</span><span class=\"nodiff\" style=\"background:#e4e4e4\">no difference</span>\
         <span style=\"background:hsl(0,70%,64%)\">worse</span><span class=\"unreliable\">unreliable ⚠</span><span class=\"bad\">FAILED</span></p>\
         <table id=\"heatmap\"></table>"
    );
    let _ = writeln!(
        h,
        "<h2>Throughput and CPU per message by scenario family</h2>"
    );
    for (family, files) in &charts.families {
        let _ = writeln!(h, "<h3 id=\"family-{0}\">{0}</h3>", esc(family));
        for f in files {
            h += &inline_svg(dir, f);
        }
    }
    let _ = writeln!(h, "<h2>Cells</h2>");
    for cell in &rep.cells {
        let s = &cell.scenario;
        let _ = writeln!(
            h,
            "<h3 id=\"cell-{}\">{}</h3><p>{} with {} clients ({} connections), {}; warm-up {} s.</p>",
            cell.index,
            esc(&cell.name),
            s.shape.name(),
            s.clients,
            cell.connections,
            esc(&cell.series),
            s.warmup_s
        );
        let _ = writeln!(
            h,
            "<table><tr><th>broker</th><th>runs</th><th>msg/s</th><th>p50</th><th>p99</th><th>CPU µs/msg</th><th>lost</th><th>dup</th><th>result</th><th>CPU/msg vs {}</th></tr>",
            esc(&rep.baseline)
        );
        let ratios = cell.ratios(&rep.baseline);
        for b in &cell.brokers {
            let r = if b.broker == rep.baseline {
                "baseline".to_string()
            } else {
                ratios
                    .iter()
                    .find(|r| r.broker == b.broker)
                    .and_then(|r| r.cpu_us_per_msg)
                    .map_or(String::new(), |r| fmt_ratio(&r))
            };
            broker_row(&mut h, b, &format!("<td>{}</td>", esc(&r)));
        }
        let _ = writeln!(h, "</table>");
        for b in &cell.brokers {
            for f in &b.failures {
                let _ = writeln!(
                    h,
                    "<p class=\"bad\">FAILED {}: {}</p>",
                    esc(&b.broker),
                    esc(f)
                );
            }
            for w in &b.warnings {
                let _ = writeln!(h, "<p class=\"warn\">{}: {}</p>", esc(&b.broker), esc(w));
            }
        }
        if let Some(f) = charts.latency.get(&cell.index) {
            h += &inline_svg(dir, f);
        }
    }
    let _ = writeln!(h, "<h2>Broker configs</h2>");
    for b in &rep.brokers {
        if let Some(cfg) = rep
            .runs
            .iter()
            .find(|r| &r.broker.name == b)
            .and_then(|r| r.broker.config.as_deref())
        {
            let _ = writeln!(
                h,
                "<details><summary>{}</summary><pre>{}</pre></details>",
                esc(b),
                esc(cfg)
            );
        }
    }
    // `</` inside the JSON would end the script element early.
    let data = data(rep).to_string().replace("</", "<\\/");
    let _ = writeln!(
        h,
        "<script type=\"application/json\" id=\"report-data\">{data}</script>\n<script>{SCRIPT}</script>\n</body></html>"
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::record;

    #[test]
    fn the_page_is_self_contained_and_carries_every_baselines_ratios() {
        let mut runs = Vec::new();
        for rep in 0..2u32 {
            for (b, tp) in [("alpha", 1000.0), ("beta", 500.0)] {
                let mut r = record(0, b, 100, tp, 2.0);
                r.repeat = rep;
                r.broker.config = Some("listener 1883 </script>".into());
                runs.push(r);
            }
        }
        runs[1].status = crate::report::json::Status::Failed;
        runs[1].failures.push("lost 3 <deliveries>".into());
        let rep = Report::new(&runs, None).unwrap();
        let dir = std::env::temp_dir();
        let html = page(&dir, &rep, &ChartFiles::default());
        assert!(html.starts_with("<!doctype html>") && html.ends_with("</body></html>\n"));
        for remote in [
            "src=\"http",
            "href=\"http",
            "<link",
            "@import",
            "url(http",
            "src=\"//",
        ] {
            assert!(!html.contains(remote), "fetches nothing: {remote}");
        }
        assert!(
            html.contains("lost 3 &lt;deliveries&gt;"),
            "escaped, in red"
        );
        assert!(html.contains("listener 1883 &lt;/script&gt;"));
        let data = html.split("id=\"report-data\">").nth(1).unwrap();
        let data = data
            .split("</script>")
            .next()
            .unwrap()
            .replace("<\\/", "</");
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["baseline"], "alpha");
        assert_eq!(
            v["ratios"]["beta"][0][0]["broker"], "alpha",
            "every baseline"
        );
        assert_eq!(
            v["ratios"]["alpha"][0][1]["throughput"]["verdict"],
            "single_run"
        );
    }
}
