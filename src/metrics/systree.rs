//! `GET /api/v1/systree`: the `$SYS` tree as one JSON object, in the shape mosquitto 2.1's
//! `http_api` listener serves (its `src/http_api.c`): flat, keyed by the full topic
//! (`"$SYS/broker/clients/connected": 3`), whole figures as JSON numbers and the uptime as
//! a number of seconds. Figures mosquitto does not serve there keep their `$SYS` payload:
//! load averages as numbers, the version as a string.

use std::fmt::Write as _;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/json";

/// The JSON object of `(topic, payload)` pairs, in their order.
pub fn render<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (topic, payload)) in pairs.into_iter().enumerate() {
        out.push_str(if i == 0 { "\n  " } else { ",\n  " });
        string(&mut out, topic);
        out.push_str(": ");
        value(&mut out, payload);
    }
    out.push_str("\n}\n");
    out
}

/// A payload as JSON: a number when it is one (or "N seconds", the uptime), else a string.
fn value(out: &mut String, payload: &str) {
    let number = payload.strip_suffix(" seconds").unwrap_or(payload);
    if is_json_number(number) {
        out.push_str(number);
    } else {
        string(out, payload);
    }
}

/// A number in JSON's grammar (RFC 8259 §6): no leading `+`, zeros, bare dot or `inf`.
fn is_json_number(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    !int.is_empty()
        && all_digits(int)
        && (int == "0" || !int.starts_with('0'))
        && all_digits(frac)
        && (!frac.is_empty() || !digits.contains('.'))
}

/// `s` as a JSON string literal.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_become_numbers_and_text_stays_a_string() {
        let text = render([
            ("$SYS/broker/version", "midge 0.1.0"),
            ("$SYS/broker/uptime", "42 seconds"),
            ("$SYS/broker/clients/connected", "3"),
            ("$SYS/broker/load/messages/received/1min", "12.50"),
            ("$SYS/broker/retained messages/count", "007"),
            ("$SYS/x", "a\"b\\c\u{1}"),
        ]);
        assert_eq!(
            text,
            "{\n  \"$SYS/broker/version\": \"midge 0.1.0\",\n  \"$SYS/broker/uptime\": 42,\n  \
             \"$SYS/broker/clients/connected\": 3,\n  \
             \"$SYS/broker/load/messages/received/1min\": 12.50,\n  \
             \"$SYS/broker/retained messages/count\": \"007\",\n  \
             \"$SYS/x\": \"a\\\"b\\\\c\\u0001\"\n}\n"
        );
        assert_eq!(render([]), "{\n}\n");
    }

    #[test]
    fn only_json_numbers_pass_as_numbers() {
        for n in ["0", "12", "-3", "1.5", "0.25"] {
            assert!(is_json_number(n), "{n}");
        }
        for n in [
            "", "-", "01", "1.", ".5", "+1", "1e5", "inf", "NaN", "1.2.3", "12a",
        ] {
            assert!(!is_json_number(n), "{n}");
        }
    }
}
