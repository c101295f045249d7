//! The manual pages, generated from the sources a user already reads: midge(8) from the
//! command line's own help (clap), midge.conf(5) from README.md's configuration tables. A
//! change to either shows in `--help`, README and the packaged pages alike.

use std::fmt::Write as _;

/// README.md, whose configuration tables are the source of midge.conf(5).
const README: &str = include_str!("../../README.md");

/// roff text: backslashes and leading dots or quotes made literal.
fn roff(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.replace('\\', "\\e");
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Markdown inline code and escapes as roff: `x` in bold, `\|` as `|`.
fn inline(md: &str) -> String {
    let mut out = String::new();
    let mut bold = false;
    for part in md.replace("\\|", "|").split('`') {
        out.push_str(&part.replace('\\', "\\e"));
        bold = !bold;
        out.push_str(if bold { "\\fB" } else { "\\fR" });
    }
    // One backtick too many was opened by the loop's last turn.
    out.truncate(out.len() - 3);
    out
}

/// midge(8): the long help of the command and of each subcommand.
pub fn midge_8(long_help: &str, subcommands: &[(String, String)]) -> String {
    let mut out = String::new();
    let version = env!("CARGO_PKG_VERSION");
    let _ = writeln!(
        out,
        ".TH MIDGE 8 \"\" \"midge {version}\" \"System Administration\""
    );
    out.push_str(".SH NAME\nmidge \\- MQTT 3.1/3.1.1/5.0 broker that reads mosquitto.conf\n");
    out.push_str(".SH SYNOPSIS\n\\fBmidge\\fR [\\fIOPTIONS\\fR] [\\fICOMMAND\\fR]\n");
    out.push_str(".SH DESCRIPTION\n.nf\n");
    out.push_str(&roff(long_help));
    out.push_str(".fi\n");
    for (name, help) in subcommands {
        let _ = writeln!(out, ".SH \"midge {name}\"\n.nf");
        out.push_str(&roff(help));
        out.push_str(".fi\n");
    }
    out.push_str(".SH SIGNALS\nSIGINT and SIGTERM stop the broker cleanly; SIGHUP reloads TLS certificates.\n");
    out.push_str(".SH FILES\n/etc/midge/midge.conf\n.SH SEE ALSO\n\\fBmidge.conf\\fR(5), \\fBmosquitto.conf\\fR(5)\n");
    out
}

/// The rows of README's markdown tables under `heading` (up to the next heading of the same
/// or a higher level), as (option, meaning).
fn table_rows(heading: &str) -> Vec<(String, String)> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut rows = Vec::new();
    let mut inside = false;
    for line in README.lines() {
        if line == heading {
            inside = true;
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if inside && hashes > 0 && hashes <= level && line.chars().nth(hashes) == Some(' ') {
            break;
        }
        if !inside || !line.starts_with("| ") || line.starts_with("|---") {
            continue;
        }
        // Cells are split on `|` not escaped as `\|`.
        let cells: Vec<String> = line
            .replace("\\|", "\u{1}")
            .split('|')
            .map(|c| c.trim().replace('\u{1}', "\\|"))
            .filter(|c| !c.is_empty())
            .collect();
        if let [option, meaning] = cells.as_slice() {
            if option != "option" {
                rows.push((option.clone(), meaning.clone()));
            }
        }
    }
    rows
}

/// midge.conf(5): README's configuration table and its table of every mosquitto option.
pub fn midge_conf_5() -> String {
    let mut out = String::new();
    let version = env!("CARGO_PKG_VERSION");
    let _ = writeln!(
        out,
        ".TH MIDGE.CONF 5 \"\" \"midge {version}\" \"File Formats\""
    );
    out.push_str(".SH NAME\nmidge.conf \\- midge configuration file (mosquitto.conf syntax)\n");
    out.push_str(
        ".SH DESCRIPTION\nOne option per line, \\fBOPTION VALUE\\fR; lines starting with # are \
         comments. A bad line stops start-up with \\fIFILE\\fR:\\fILINE\\fR: problem. A \
         mosquitto.conf file is read as mosquitto reads it.\n",
    );
    for (title, heading) in [
        ("OPTIONS", "### Configuration (mosquitto.conf syntax)"),
        ("MOSQUITTO OPTIONS", "### Every mosquitto.conf option"),
    ] {
        let _ = writeln!(out, ".SH \"{title}\"");
        for (option, meaning) in table_rows(heading) {
            let _ = writeln!(out, ".TP\n{}\n{}", inline(&option), inline(&meaning));
        }
    }
    out.push_str(".SH SEE ALSO\n\\fBmidge\\fR(8), \\fBmosquitto.conf\\fR(5)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conf_page_has_every_table_row() {
        let page = midge_conf_5();
        assert!(table_rows("### Configuration (mosquitto.conf syntax)").len() > 20);
        assert!(table_rows("### Every mosquitto.conf option").len() > 30);
        for option in [
            "max_inflight_bytes",
            "log_dest",
            "pid_file",
            "user",
            "crlfile",
        ] {
            assert!(page.contains(&format!("\\fB{option}")), "{option}");
        }
        assert!(!page.contains('`'), "markdown left in the page");
    }

    #[test]
    fn inline_code_is_bold_and_escapes_are_roff() {
        assert_eq!(inline("a `b` c"), "a \\fBb\\fR c");
        assert_eq!(inline("`x\\|y`"), "\\fBx|y\\fR");
        assert_eq!(roff(".dot\nback\\slash"), "\\&.dot\nback\\eslash\n");
    }
}
