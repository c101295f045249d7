//! The wildcard trie walk of a match: depth-first over an explicit stack that stays inline
//! for ordinary topics.

use super::entry::Entry;
use super::node::{split_level, GroupId, Node};
use super::TopicIndex;

impl TopicIndex {
    /// Walks the wildcard trie for `topic`, calling `visit` with every matching list and its
    /// shared groups; adds the work done to `steps` (for the cache's admission rule).
    ///
    /// Depth-first with an explicit stack, not a recursion: a topic may have thousands of
    /// levels. The stack grows by at most one frame per level (a node pushes its literal and
    /// `+` children, two, and pops one) and lives inline for the first [`INLINE_FRAMES`].
    pub(super) fn walk(
        &self,
        topic: &str,
        steps: &mut u32,
        visit: &mut impl FnMut(&[Entry], &[GroupId]),
    ) {
        let dollar = topic.starts_with('$');
        let mut stack = WalkStack::new();
        stack.push((&self.root, topic, true));
        while let Some((node, rest, first)) = stack.pop() {
            *steps += 2; // this node, and the child lookup below
            let wild_ok = !(first && dollar);
            if wild_ok {
                // `a/#` matches `a/b/c`, and also `a` itself (handled at the end of the topic).
                visit(node.hash.as_slice(), &node.shared_hash);
            }
            let (level, tail) = split_level(rest);
            let literal = node.children.get(level);
            let plus = if wild_ok { node.plus.as_deref() } else { None };
            for child in [literal, plus].into_iter().flatten() {
                match tail {
                    Some(t) => stack.push((child, t, false)),
                    None => {
                        visit(child.here.as_slice(), &child.shared);
                        // "sport/#" matches "sport" [MQTT-4.7.1-2].
                        visit(child.hash.as_slice(), &child.shared_hash);
                    }
                }
            }
        }
    }
}

/// Frames kept inline by [`WalkStack`]: topics of up to this many levels walk without
/// allocating.
pub(super) const INLINE_FRAMES: usize = 16;

/// One pending node of a trie walk: the node, what is left of the topic below it, and
/// whether it is the root (for the `$` rule).
pub(super) type Frame<'a> = (&'a Node, &'a str, bool);

/// A stack of walk frames: inline up to [`INLINE_FRAMES`], then on the heap, so the hot path
/// does not allocate and a deep topic costs heap, not thread stack.
pub(super) struct WalkStack<'a> {
    pub(super) inline: [Option<Frame<'a>>; INLINE_FRAMES],
    pub(super) len: usize,
    pub(super) spill: Vec<Frame<'a>>,
}

impl<'a> WalkStack<'a> {
    pub(super) fn new() -> WalkStack<'a> {
        WalkStack {
            inline: [None; INLINE_FRAMES],
            len: 0,
            spill: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, frame: Frame<'a>) {
        if self.len < INLINE_FRAMES {
            self.inline[self.len] = Some(frame);
            self.len += 1;
        } else {
            self.spill.push(frame);
        }
    }

    pub(super) fn pop(&mut self) -> Option<Frame<'a>> {
        if let Some(f) = self.spill.pop() {
            return Some(f);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.inline[self.len].take()
    }
}
