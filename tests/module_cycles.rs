//! The top-level modules of `src/` must not depend on each other in a circle
//! (docs/ARCHITECTURE.md §2: dependencies point one way). A cycle makes two modules one unit
//! that can only be understood, tested and changed together, so it fails the build here.
//!
//! How a dependency is found: every file under `src/<module>` (or `src/<module>.rs`) belongs
//! to the top-level module `<module>` declared in `src/lib.rs`; after comments and string
//! literals are removed, a file depends on module `Y` where it names `crate::Y`, lists `Y` in
//! `use crate::{.., Y, ..}`, or climbs out of its own module with `super::` (`super::Y` in
//! `src/x/mod.rs`, `super::super::Y` in `src/x/a.rs`). `midge::Y` does not occur in `src/`.
//!
//! `#[cfg(test)]` modules are included: a test that needs another module's internals is a
//! dependency too, and none is needed to make today's graph one-way. Doc links in comments
//! are not counted (they do not make the code depend on anything).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Dependencies that close a known cycle and are being removed by work on other branches,
/// tolerated so that this branch stays green. TEMPORARY: this list must be emptied. Each entry
/// `(from, to)` is left out of the graph before cycles are looked for; an entry that no longer
/// closes a cycle fails the test, so it is deleted as soon as its fix lands.
/// - `config -> transport`: config parses cipher suite names with tables from `transport::tls`.
/// - `shard -> broker`: the shard reads the broker's `Shared` state.
const KNOWN_CYCLES_TO_REMOVE: &[(&str, &str)] = &[];

/// Where one module refers to another, for the failure message.
type Edges = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn top_level_modules_have_no_dependency_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(
        modules.len() > 5,
        "found too few modules in src/lib.rs: {modules:?}"
    );
    let edges = dependency_edges(&src, &modules);
    assert!(
        edges.values().map(BTreeMap::len).sum::<usize>() > 5,
        "found too few dependencies: the scanner is broken"
    );

    let all = cycles(&edges);
    for component in &all {
        eprintln!("{}", describe_component(component, &edges));
    }
    let mut allowed = edges.clone();
    for (from, to) in KNOWN_CYCLES_TO_REMOVE {
        if let Some(targets) = allowed.get_mut(*from) {
            targets.remove(*to);
        }
    }
    let left = cycles(&allowed);
    assert!(
        left.is_empty(),
        "dependency cycles among the top-level modules of src/ (each step names one place):\n{}",
        left.iter()
            .map(|c| describe_component(c, &allowed))
            .collect::<String>()
    );
    let stale: Vec<_> = KNOWN_CYCLES_TO_REMOVE
        .iter()
        .filter(|(from, to)| {
            !all.iter()
                .any(|c| c.contains(*from) && c.contains(*to) && edges[*from].contains_key(*to))
        })
        .collect();
    assert!(
        stale.is_empty(),
        "KNOWN_CYCLES_TO_REMOVE entries that no longer close a cycle; delete them: {stale:?}"
    );
}

/// The names of the `mod` / `pub mod` items of `lib.rs` that live in files (not inline).
fn top_level_modules(lib_rs: &str) -> BTreeSet<String> {
    let code = strip_comments_and_strings(lib_rs);
    let mut modules = BTreeSet::new();
    for line in code.lines() {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        let Some(pos) = words.iter().position(|w| *w == "mod") else {
            continue;
        };
        let before_ok = words[..pos]
            .iter()
            .all(|w| *w == "pub" || w.starts_with("pub(") || w.starts_with("#["));
        if let (true, Some(name)) = (before_ok, words.get(pos + 1)) {
            if let Some(name) = name.strip_suffix(';') {
                modules.insert(name.to_string());
            }
        }
    }
    modules
}

/// For each module, the modules it refers to, with one `file:line` where it does.
fn dependency_edges(src: &Path, modules: &BTreeSet<String>) -> Edges {
    let mut edges = Edges::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let owner = parts[0].trim_end_matches(".rs").to_string();
        if !modules.contains(&owner) {
            continue; // lib.rs, main.rs
        }
        // How many `super::` reach the crate root from this file's module: `src/x.rs` and
        // `src/x/mod.rs` are module `x` (1), `src/x/a.rs` is `x::a` (2).
        let file_name = parts.last().unwrap();
        let depth = if file_name == "mod.rs" {
            parts.len() - 1
        } else {
            parts.len()
        };
        let code = strip_comments_and_strings(&fs::read_to_string(&file).unwrap());
        for (line, target) in references(&code, depth) {
            if target != owner && modules.contains(&target) {
                edges
                    .entry(owner.clone())
                    .or_default()
                    .entry(target)
                    .or_insert_with(|| format!("src/{}:{line}", rel.display()));
            }
        }
    }
    edges
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The top-level module names `code` refers to, with 1-based line numbers. `depth` is the
/// number of `super::` that lead from the file's module to the crate root.
fn references(code: &str, depth: usize) -> Vec<(usize, String)> {
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let line_at = |i: usize| code[..i].matches('\n').count() + 1;
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && is_ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i;
        while j < bytes.len() && is_ident(bytes[j]) {
            j += 1;
        }
        let word = &code[start..j];
        // Count a `super::super::...` chain, or take `crate::`.
        let mut supers = 0;
        let mut k = start;
        let mut rooted = word == "crate";
        if word == "super" {
            while code[k..].starts_with("super") && code[k + 5..].trim_start().starts_with("::") {
                supers += 1;
                k = skip_ws(code, k + 5);
                k = skip_ws(code, k + 2);
            }
            rooted = supers >= depth && supers > 0;
        } else if rooted {
            k = skip_ws(code, j);
            if !code[k..].starts_with("::") {
                rooted = false;
            } else {
                k = skip_ws(code, k + 2);
            }
        }
        if !rooted {
            i = j;
            continue;
        }
        if bytes.get(k) == Some(&b'{') {
            for (off, name) in group_heads(&code[k..]) {
                found.push((line_at(k + off), name));
            }
        } else {
            let mut e = k;
            while e < bytes.len() && is_ident(bytes[e]) {
                e += 1;
            }
            found.push((line_at(k), code[k..e].to_string()));
        }
        i = k.max(j);
    }
    found
}

fn skip_ws(code: &str, mut i: usize) -> usize {
    let b = code.as_bytes();
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The first path segment of each item of the `{...}` group that `group` starts with.
fn group_heads(group: &str) -> Vec<(usize, String)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = false;
    let mut i = 0;
    let b = group.as_bytes();
    while i < b.len() {
        match b[i] {
            b'{' => {
                depth += 1;
                expect_head = depth == 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => expect_head = true,
            c if expect_head && (c.is_ascii_alphanumeric() || c == b'_') => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                heads.push((start, group[start..i].to_string()));
                expect_head = false;
                continue;
            }
            c if !c.is_ascii_whitespace() => expect_head = false,
            _ => {}
        }
        i += 1;
    }
    heads
}

/// `code` with comments and the contents of string and char literals blanked out (newlines
/// kept, so line numbers still match).
fn strip_comments_and_strings(code: &str) -> String {
    let b = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }))
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            // Nested block comments.
            let (mut depth, mut j) = (0usize, 0);
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(len) = (i == 0 || !is_ident(b[i - 1]))
            .then(|| raw_string_len(rest))
            .flatten()
        {
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\u{..}'), else a lifetime or label.
            let len = if rest.get(1) == Some(&b'\\') {
                rest.get(3..)
                    .and_then(|r| r.iter().position(|&c| c == b'\''))
                    .map(|p| p + 4)
            } else {
                code[i + 1..].chars().next().and_then(|c| {
                    let n = c.len_utf8();
                    (rest.get(1 + n) == Some(&b'\'')).then_some(n + 2)
                })
            };
            let len = len.unwrap_or(1);
            blank(&mut out, &rest[..len]);
            i += len;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The length of the raw string literal (`r"..."`, `r#"..."#`, `br"..."`) `s` starts with.
fn raw_string_len(s: &[u8]) -> Option<usize> {
    let mut i = usize::from(s.first() == Some(&b'b'));
    if s.get(i) != Some(&b'r') {
        return None;
    }
    i += 1;
    let hashes = s[i..].iter().take_while(|&&c| c == b'#').count();
    i += hashes;
    if s.get(i) != Some(&b'"') {
        return None;
    }
    let mut close = vec![b'"'];
    close.extend(std::iter::repeat_n(b'#', hashes));
    let body = i + 1;
    s[body..]
        .windows(close.len())
        .position(|w| w == close.as_slice())
        .map(|p| body + p + close.len())
}

/// The strongly connected components with more than one module (Tarjan's algorithm), each
/// a cycle or a knot of cycles.
fn cycles(edges: &Edges) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        edges: &'a Edges,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flat_map(|m| m.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    let nodes: BTreeSet<&str> = edges
        .iter()
        .flat_map(|(k, m)| std::iter::once(k.as_str()).chain(m.keys().map(String::as_str)))
        .collect();
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// The shortest cycle through each module of `component` (each cycle once), every step with
/// the place it comes from.
fn describe_component(component: &BTreeSet<String>, edges: &Edges) -> String {
    let mut seen = BTreeSet::new();
    let mut text = format!("cycle among {{{}}}:\n", join(component));
    for start in component {
        let path = shortest_cycle(start, component, edges);
        // The same cycle found from another of its modules: compare it rotated to its least.
        let body = &path[..path.len() - 1];
        let least = body.iter().enumerate().min_by_key(|(_, m)| *m).unwrap().0;
        let rotated: Vec<&str> = body[least..]
            .iter()
            .chain(&body[..least])
            .copied()
            .collect();
        if !seen.insert(rotated) {
            continue;
        }
        text += "  ";
        for pair in path.windows(2) {
            text += &format!("{} -> {} ({}); ", pair[0], pair[1], edges[pair[0]][pair[1]]);
        }
        text.truncate(text.len() - 2);
        text += "\n";
    }
    text
}

/// The modules of the shortest cycle from `start` back to it inside `component`, `start`
/// first and last (breadth-first search).
fn shortest_cycle<'a>(
    start: &'a str,
    component: &BTreeSet<String>,
    edges: &'a Edges,
) -> Vec<&'a str> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut frontier = vec![start];
    'search: while !frontier.is_empty() {
        let mut next = Vec::new();
        for v in frontier {
            for w in edges.get(v).into_iter().flat_map(|m| m.keys()) {
                if !component.contains(w) || came_from.contains_key(w.as_str()) {
                    continue;
                }
                came_from.insert(w, v);
                if w == start {
                    break 'search;
                }
                next.push(w.as_str());
            }
        }
        frontier = next;
    }
    let mut path = vec![start];
    let mut v = came_from[start];
    while v != start {
        path.push(v);
        v = came_from[v];
    }
    path.push(start);
    path.reverse();
    path
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn graph(pairs: &[(&str, &str)]) -> Edges {
    let mut edges = Edges::new();
    for (a, b) in pairs {
        edges
            .entry(a.to_string())
            .or_default()
            .insert(b.to_string(), "here".to_string());
    }
    edges
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn cycle_finder_on_a_synthetic_graph() {
    // a -> b -> c -> a is a cycle; d -> a and c -> e hang off it; f <-> g is another.
    let edges = graph(&[
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
        ("d", "a"),
        ("c", "e"),
        ("f", "g"),
        ("g", "f"),
    ]);
    let mut found = cycles(&edges);
    found.sort();
    assert_eq!(found, vec![set(&["a", "b", "c"]), set(&["f", "g"])]);
    assert_eq!(
        describe_component(&set(&["a", "b", "c"]), &edges),
        "cycle among {a, b, c}:\n  a -> b (here); b -> c (here); c -> a (here)\n"
    );
    // Two cycles sharing `x`: both are listed, each once.
    let knot = graph(&[("x", "y"), ("y", "x"), ("x", "z"), ("z", "x")]);
    assert_eq!(cycles(&knot), vec![set(&["x", "y", "z"])]);
    assert_eq!(
        describe_component(&set(&["x", "y", "z"]), &knot),
        "cycle among {x, y, z}:\n  x -> y (here); y -> x (here)\n  z -> x (here); x -> z (here)\n"
    );
    // A diamond without a back edge has no cycle.
    let dag = graph(&[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]);
    assert!(cycles(&dag).is_empty());
}

#[test]
fn references_are_found_in_paths_groups_and_super_chains() {
    let code = strip_comments_and_strings(
        "use crate::store::{Batch, Flow};\n\
         use crate::{auth::Acl, message, protocol::{QoS, Will}};\n\
         // crate::commented\n\
         /* crate::blocked /* nested */ crate::still */\n\
         let s = \"crate::quoted\"; let c = '\"'; let r = r#\"crate::raw\"#;\n\
         fn f<'a>(x: &'a crate::index::Index) {}\n\
         use super::super::retain::Retained; use super::sibling;\n\
         let t = my_crate::not_this;\n",
    );
    let names = |depth| {
        references(&code, depth)
            .into_iter()
            .collect::<BTreeSet<(usize, String)>>()
    };
    let expect = |extra: &[(usize, &str)]| {
        let mut e: BTreeSet<(usize, String)> = [
            (1, "store"),
            (2, "auth"),
            (2, "message"),
            (2, "protocol"),
            (6, "index"),
        ]
        .iter()
        .map(|(l, s)| (*l, s.to_string()))
        .collect();
        e.extend(extra.iter().map(|(l, s)| (*l, s.to_string())));
        e
    };
    // In src/x/a.rs (depth 2) only `super::super::` leaves the module.
    assert_eq!(names(2), expect(&[(7, "retain")]));
    // In src/x.rs (depth 1) `super::` reaches the crate root too.
    assert_eq!(names(1), expect(&[(7, "retain"), (7, "sibling")]));
    assert_eq!(
        top_level_modules("pub mod a;\nmod b;\n#[doc(hidden)]\npub mod inline {\n}\n// mod c;\n"),
        set(&["a", "b"])
    );
}
