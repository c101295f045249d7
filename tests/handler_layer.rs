//! The packet handlers (`src/handle/`) are a layer of their own (docs/ARCHITECTURE.md §2,
//! "The handler layer"): a handler gets a context from `shard::ctx` and touches nothing of the
//! shard but what that context offers. The compiler keeps the context's borrow private; this
//! keeps a handler from going around it by naming `Shard` (an `impl Shard` method reaches all
//! of its fields) or the shard's internal modules.
//!
//! `hooks.rs` is the exception the architecture names: its hooks are called by the shard's own
//! paths as well and do the shard's bookkeeping.

use std::fs;
use std::path::Path;

/// What of `crate::shard` a handler may name: the contexts and the close reasons.
const ALLOWED_SHARD_PATHS: &[&str] = &["crate::shard::ctx::", "crate::shard::Close"];

#[test]
fn handlers_reach_the_shard_only_through_their_context() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/handle");
    let mut checked = 0;
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".rs") || name == "hooks.rs" {
            continue;
        }
        checked += 1;
        for (i, line) in fs::read_to_string(&path).unwrap().lines().enumerate() {
            if reaches_around(line) {
                found.push(format!("src/handle/{name}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(checked >= 4, "found too few handler files in {dir:?}");
    assert!(
        found.is_empty(),
        "handlers name the shard instead of working through their context:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_a_handler_that_names_the_shard() {
    // The scanner itself: an `impl Shard` line and an internal path are caught, the allowed
    // ones and comments are not.
    let flagged = reaches_around;
    assert!(flagged("impl Shard {"));
    assert!(flagged("use crate::shard::conn::ConnState;"));
    assert!(!flagged("use crate::shard::ctx::{Ctx, SessionCtx};"));
    assert!(!flagged("use crate::shard::Close;"));
    assert!(!flagged("//! Shard thread only."));
    assert!(!flagged("fn f(cx: &mut SessionCtx<'_>) {}"));
}

/// Whether a line of code (outside its `//` comment) names `Shard` or a path into the shard
/// other than the allowed ones.
fn reaches_around(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    let names_shard = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| word == "Shard");
    let other_path = code.match_indices("crate::shard::").any(|(at, _)| {
        !ALLOWED_SHARD_PATHS
            .iter()
            .any(|allowed| code[at..].starts_with(allowed))
    });
    names_shard || other_path
}
