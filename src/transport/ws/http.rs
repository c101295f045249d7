//! `http_dir`: files answered to a plain HTTP GET on a WebSocket listener (as mosquitto
//! does), so that a browser page (the status page, an application) and the MQTT.js it loads
//! come from the broker it talks to.
//!
//! Only regular files inside the directory are served: `..` and `.` segments, backslashes
//! and NUL are refused, and the resolved path (symbolic links followed) must still be under
//! the directory's own resolved path. Files are read whole on the shard thread when asked
//! for, up to [`MAX_FILE`]: this is for a few small pages, not a web server.

use std::path::{Path, PathBuf};

use super::handshake::response;

/// Largest file served.
pub const MAX_FILE: u64 = 8 * 1024 * 1024;

/// The complete HTTP answer to `GET target` from `dir` (`None`: no `http_dir`).
pub fn answer(dir: Option<&Path>, target: &str, out: &mut Vec<u8>) {
    let file = dir.and_then(|dir| resolve(dir, target));
    let Some(path) = file else {
        return response("404 Not Found", "text/plain", b"not found\n", out);
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.len() <= MAX_FILE => {}
        Ok(m) if m.is_file() => {
            return response("403 Forbidden", "text/plain", b"file too large\n", out)
        }
        _ => return response("404 Not Found", "text/plain", b"not found\n", out),
    }
    match std::fs::read(&path) {
        Ok(body) => response("200 OK", content_type(&path), &body, out),
        Err(_) => response("404 Not Found", "text/plain", b"not found\n", out),
    }
}

/// The file `target` names under `dir`, if it is a safe name of something inside it.
fn resolve(dir: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next()?;
    let decoded = percent_decode(path)?;
    let mut full = dir.to_path_buf();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment == ".." || segment == "." || segment.contains(['\\', '\0']) {
            return None;
        }
        full.push(segment);
    }
    if decoded.ends_with('/') || decoded.is_empty() {
        full.push("index.html");
    }
    let root = dir.canonicalize().ok()?;
    let real = full.canonicalize().ok()?;
    real.starts_with(&root).then_some(real)
}

/// `%XX` escapes decoded; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(dir: &Path, target: &str) -> String {
        let mut out = Vec::new();
        answer(Some(dir), target, &mut out);
        let text = String::from_utf8_lossy(&out);
        text.lines().next().unwrap().to_owned()
    }

    #[test]
    fn files_inside_the_directory_only() {
        let tmp = tempfile::tempdir().unwrap();
        let www = tmp.path().join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::write(www.join("index.html"), "<p>hi</p>").unwrap();
        std::fs::create_dir(www.join("sub")).unwrap();
        std::fs::write(www.join("sub/a b.js"), "x").unwrap();
        std::fs::write(tmp.path().join("secret"), "no").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), www.join("link")).unwrap();

        assert_eq!(status(&www, "/"), "HTTP/1.1 200 OK");
        assert_eq!(status(&www, "/index.html?v=2"), "HTTP/1.1 200 OK");
        assert_eq!(status(&www, "/sub/a%20b.js"), "HTTP/1.1 200 OK");
        for bad in [
            "/../secret",
            "/sub/../../secret",
            "/%2e%2e/secret",
            "/link",
            "/sub",
            "/nope",
            "/%zz",
        ] {
            assert_eq!(status(&www, bad), "HTTP/1.1 404 Not Found", "{bad}");
        }
        let mut out = Vec::new();
        answer(None, "/index.html", &mut out);
        assert!(out.starts_with(b"HTTP/1.1 404"));
        let mut out = Vec::new();
        answer(Some(&www), "/index.html", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Content-Type: text/html") && text.ends_with("<p>hi</p>"),
            "{text}"
        );
    }
}
