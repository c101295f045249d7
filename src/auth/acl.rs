//! mosquitto ACL files: parse, and check access per client.
//!
//! Syntax (mosquitto 2.0, `acl_file`):
//! ```text
//! # comment
//! topic [read|write|readwrite|deny] TOPIC     # before any `user` line: anonymous clients
//! user USERNAME                               # starts USERNAME's section
//! topic [read|write|readwrite|deny] TOPIC     # in a user section: that user only
//! pattern [read|write|readwrite|deny] TOPIC   # anywhere: every client, %c = client id,
//!                                             # %u = user name
//! ```
//! Without an access word the rule is `readwrite`; TOPIC is the rest of the line (it may hold
//! spaces) and must be a valid topic filter.
//!
//! Decision, as mosquitto 2.0's `mosquitto_acl_check_default`:
//! 1. the client's own rules (its user section, or the anonymous section if it has no user
//!    name): a matching `deny` refuses; otherwise a matching rule that grants the access allows;
//! 2. then, if there are patterns: a client whose user name or client id holds `+` or `#` is
//!    refused (it could otherwise widen a pattern); a matching `deny` pattern refuses; a
//!    matching pattern that grants the access allows. A pattern with `%u` never applies to a
//!    client without a user name;
//! 3. nothing matched: refused.
//!
//! A topic starting with `$` is only matched by a rule starting with `$`.
//!
//! [`Access::Subscribe`] is midge's addition: mosquitto 2.0's file-based ACL grants every
//! SUBSCRIBE and only filters the messages delivered (`read`). midge refuses (SUBACK 0x80/0x87)
//! a subscription that could never deliver anything: one entirely covered by a `deny` rule, or
//! overlapping no `read` rule. Every subscription that mosquitto would deliver a message on is
//! still granted, so the broker must go on checking [`Access::Read`] for each message it
//! delivers, as mosquitto does.
//!
//! [`Acl::for_client`] substitutes the patterns once per connection (at CONNECT); the
//! resulting [`ClientAcl::allowed`] walks the rules without allocating.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::topic::{covers, overlap, valid_filter};
use super::AuthError;

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive a message published on this topic (checked per delivered message).
    Read,
    /// Publish on this topic.
    Write,
    /// Subscribe with this topic filter (`$share/GROUP/` is stripped first).
    Subscribe,
}

const READ: u8 = 1;
const WRITE: u8 = 2;

/// One `topic` rule: a filter and what it grants (`deny` rules are kept apart).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    filter: Box<str>,
    /// `READ | WRITE` bits granted.
    access: u8,
}

/// The rules of one section (a user, or the anonymous clients), deny rules first as mosquitto
/// orders them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rules {
    deny: Vec<Box<str>>,
    allow: Vec<Rule>,
}

impl Rules {
    fn push(&mut self, filter: &str, access: u8) {
        if access == 0 {
            self.deny.push(filter.into());
        } else {
            self.allow.push(Rule {
                filter: filter.into(),
                access,
            });
        }
    }

    /// `Some(decision)` if a rule of this section decides, `None` to go on.
    fn check(&self, topic: &str, access: Access) -> Option<bool> {
        check_rules(
            self.deny.iter().map(|f| &**f),
            self.allow.iter().map(|r| (&*r.filter, r.access)),
            topic,
            access,
        )
    }
}

/// The shared decision over one list: any matching deny refuses, else a matching allow allows.
fn check_rules<'a>(
    mut deny: impl Iterator<Item = &'a str>,
    mut allow: impl Iterator<Item = (&'a str, u8)>,
    topic: &str,
    access: Access,
) -> Option<bool> {
    match access {
        Access::Read | Access::Write => {
            let bit = if access == Access::Read { READ } else { WRITE };
            if deny.any(|f| covers(f, topic)) {
                return Some(false);
            }
            if allow.any(|(f, a)| a & bit != 0 && covers(f, topic)) {
                return Some(true);
            }
        }
        Access::Subscribe => {
            if deny.any(|f| covers(f, topic)) {
                return Some(false);
            }
            if allow.any(|(f, a)| a & READ != 0 && overlap(f, topic)) {
                return Some(true);
            }
        }
    }
    None
}

/// A `pattern` rule before substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    filter: Box<str>,
    access: u8,
    /// Holds `%u`: never applies to a client without a user name.
    has_user: bool,
}

/// A loaded ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// Rules before any `user` line: clients without a user name.
    anonymous: Arc<Rules>,
    users: HashMap<String, Arc<Rules>>,
    /// Patterns in file order, deny ones first.
    patterns: Vec<Pattern>,
}

impl Acl {
    /// Reads and parses the ACL file at `path`. Errors name the file (and the line).
    pub fn load(path: impl AsRef<Path>) -> Result<Acl, AuthError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| AuthError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Acl::parse(&text, &path.display().to_string())
    }

    /// Parses ACL-file text; `source_name` names it in errors (`NAME:LINE: problem`).
    pub fn parse(text: &str, source_name: &str) -> Result<Acl, AuthError> {
        let mut anonymous = Rules::default();
        let mut users: HashMap<String, Rules> = HashMap::new();
        let mut deny_patterns = Vec::new();
        let mut allow_patterns = Vec::new();
        let mut user: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let err = |message: String| AuthError::Parse {
                file: source_name.to_owned(),
                line: index + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = match line.split_once(char::is_whitespace) {
                Some((k, r)) => (k, r.trim()),
                None => (line, ""),
            };
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("missing user name after 'user'".into()));
                    }
                    users.entry(rest.to_owned()).or_default();
                    user = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    if rest.is_empty() {
                        return Err(err(format!("missing topic after '{keyword}'")));
                    }
                    // As mosquitto: one word alone is the topic (readwrite); otherwise the
                    // first word is the access and the rest of the line the topic.
                    let (access, topic) = match rest.split_once(char::is_whitespace) {
                        None => (READ | WRITE, rest),
                        Some((word, topic)) => {
                            let access = match word {
                                "read" => READ,
                                "write" => WRITE,
                                "readwrite" => READ | WRITE,
                                "deny" => 0,
                                _ => {
                                    return Err(err(format!(
                                        "bad access '{word}' (expected read, write, readwrite \
                                         or deny)"
                                    )))
                                }
                            };
                            (access, topic.trim())
                        }
                    };
                    if !valid_filter(topic) {
                        return Err(err(format!("invalid topic filter '{topic}'")));
                    }
                    if keyword == "pattern" {
                        let pattern = Pattern {
                            filter: topic.into(),
                            access,
                            has_user: topic.contains("%u"),
                        };
                        if access == 0 {
                            deny_patterns.push(pattern);
                        } else {
                            allow_patterns.push(pattern);
                        }
                    } else {
                        match &user {
                            Some(name) => {
                                users.entry(name.clone()).or_default().push(topic, access)
                            }
                            None => anonymous.push(topic, access),
                        }
                    }
                }
                _ => {
                    return Err(err(format!(
                        "unknown keyword '{keyword}' (expected topic, pattern or user)"
                    )))
                }
            }
        }
        deny_patterns.append(&mut allow_patterns);
        Ok(Acl {
            anonymous: Arc::new(anonymous),
            users: users.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
            patterns: deny_patterns,
        })
    }

    /// The rules that apply to one client, with `%c` and `%u` substituted. Call once per
    /// connection (at CONNECT) and keep the result for the connection's life.
    pub fn for_client(&self, client_id: &str, username: Option<&str>) -> ClientAcl {
        let own = match username {
            Some(name) => self.users.get(name).cloned(),
            None => Some(self.anonymous.clone()),
        };
        let dangerous =
            username.is_some_and(|u| u.contains(['+', '#'])) || client_id.contains(['+', '#']);
        let mut patterns = Rules::default();
        for p in &self.patterns {
            if p.has_user && username.is_none() {
                continue;
            }
            let filter = substitute(&p.filter, client_id, username.unwrap_or(""));
            patterns.push(&filter, p.access);
        }
        ClientAcl {
            inner: Inner::Rules {
                own,
                has_patterns: !self.patterns.is_empty(),
                dangerous,
                compiled: Box::new(Compiled {
                    patterns,
                    username: username.map(Box::from),
                }),
            },
        }
    }

    /// One-off check (substitutes the patterns on each call): prefer [`Acl::for_client`] on
    /// hot paths.
    pub fn allowed(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        self.for_client(client_id, username).allowed(topic, access)
    }
}

/// mosquitto's textual substitution: every `%c` becomes the client id, every `%u` the user name.
fn substitute(pattern: &str, client_id: &str, username: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + client_id.len() + username.len());
    let mut rest = pattern;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.as_bytes().get(i + 1) {
            Some(b'c') => {
                out.push_str(client_id);
                rest = &rest[i + 2..];
            }
            Some(b'u') => {
                out.push_str(username);
                rest = &rest[i + 2..];
            }
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The ACL of one connected client. Cheap to check: no allocation per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAcl {
    inner: Inner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Inner {
    /// No `acl_file` configured: everything is allowed. The user name is kept so that the
    /// rules can be compiled for the client when an ACL file comes with a reload.
    AllowAll { username: Option<Box<str>> },
    Rules {
        /// The user's section (or the anonymous one); `None` if the user has none.
        own: Option<Arc<Rules>>,
        /// The file has patterns (even if none applies to this client).
        has_patterns: bool,
        /// User name or client id holds `+` or `#`: patterns refuse everything.
        dangerous: bool,
        /// Substituted patterns and the user name. Boxed: every session holds a
        /// `ClientAcl`, most of them `AllowAll`, and the enum is as large as its largest
        /// variant.
        compiled: Box<Compiled>,
    },
}

/// What [`Acl::for_client`] compiled for one client beyond its user's section.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Compiled {
    /// The patterns with `%c` and `%u` substituted.
    patterns: Rules,
    /// The client's user name (to compile the rules again when the ACL file is reloaded).
    username: Option<Box<str>>,
}

impl ClientAcl {
    /// The ACL of a broker without `acl_file`: everything is allowed.
    pub fn allow_all() -> ClientAcl {
        ClientAcl::allow_all_for(None)
    }

    /// Everything allowed for a client with `username` (kept for a later reload).
    pub fn allow_all_for(username: Option<&str>) -> ClientAcl {
        ClientAcl {
            inner: Inner::AllowAll {
                username: username.map(Box::from),
            },
        }
    }

    /// The user name these rules were compiled for.
    pub fn username(&self) -> Option<&str> {
        match &self.inner {
            Inner::AllowAll { username } => username.as_deref(),
            Inner::Rules { compiled, .. } => compiled.username.as_deref(),
        }
    }

    /// May this client do `access` on `topic` (a topic name for Read/Write, a subscription
    /// filter for Subscribe)?
    pub fn allowed(&self, topic: &str, access: Access) -> bool {
        let Inner::Rules {
            own,
            has_patterns,
            dangerous,
            compiled,
        } = &self.inner
        else {
            return true;
        };
        let topic = match access {
            Access::Subscribe => strip_share(topic),
            Access::Read | Access::Write => topic,
        };
        if let Some(own) = own {
            if let Some(decision) = own.check(topic, access) {
                return decision;
            }
        }
        if *has_patterns {
            if *dangerous {
                return false;
            }
            if let Some(decision) = compiled.patterns.check(topic, access) {
                return decision;
            }
        }
        false
    }
}

/// `$share/GROUP/FILTER` -> `FILTER` (a shared subscription is checked on its filter).
fn strip_share(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::Access::{Read, Subscribe, Write};
    use super::*;

    fn acl(text: &str) -> Acl {
        Acl::parse(text, "acl").unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        match Acl::parse(text, "acl") {
            Ok(a) => panic!("expected an error, got {a:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn anonymous_section_applies_to_clients_without_user_name() {
        let a = acl("topic read public/#\ntopic write inbox\nuser alice\ntopic secret/#\n");
        assert!(a.allowed("c", None, "public/x", Read));
        assert!(!a.allowed("c", None, "public/x", Write));
        assert!(a.allowed("c", None, "inbox", Write));
        assert!(!a.allowed("c", None, "inbox", Read));
        assert!(!a.allowed("c", None, "secret/x", Read));
        // alice has her own section only.
        assert!(a.allowed("c", Some("alice"), "secret/x", Read));
        assert!(a.allowed("c", Some("alice"), "secret/x", Write));
        assert!(!a.allowed("c", Some("alice"), "public/x", Read));
        // A user without a section gets nothing (no patterns here).
        assert!(!a.allowed("c", Some("bob"), "public/x", Read));
    }

    #[test]
    fn deny_wins_over_allow_in_the_same_section() {
        let a = acl("user alice\ntopic readwrite a/#\ntopic deny a/secret\n");
        assert!(a.allowed("c", Some("alice"), "a/open", Read));
        assert!(!a.allowed("c", Some("alice"), "a/secret", Read));
        assert!(!a.allowed("c", Some("alice"), "a/secret", Write));
        // Order in the file does not matter (mosquitto puts deny rules first).
        let b = acl("user alice\ntopic deny a/secret\ntopic readwrite a/#\n");
        assert_eq!(
            a.for_client("c", Some("alice")),
            b.for_client("c", Some("alice"))
        );
    }

    #[test]
    fn user_rules_are_checked_before_patterns() {
        // As mosquitto: a user allow decides before a deny pattern is seen...
        let a = acl("pattern deny a/%c\nuser alice\ntopic a/#\n");
        assert!(a.allowed("x", Some("alice"), "a/x", Read));
        // ...and a user deny refuses even if a pattern allows.
        let b = acl("pattern a/%c\nuser alice\ntopic deny a/#\n");
        assert!(!b.allowed("x", Some("alice"), "a/x", Read));
        assert!(b.allowed("x", Some("bob"), "a/x", Read));
    }

    #[test]
    fn patterns_substitute_client_id_and_user_name() {
        let a = acl("pattern readwrite devices/%c/#\npattern read users/%u/in\n\
             pattern write out/%u-%c\n");
        assert!(a.allowed("dev1", None, "devices/dev1/temp", Write));
        assert!(a.allowed("dev1", None, "devices/dev1", Read));
        assert!(!a.allowed("dev1", None, "devices/dev2/temp", Write));
        assert!(a.allowed("dev1", Some("alice"), "users/alice/in", Read));
        assert!(!a.allowed("dev1", Some("alice"), "users/alice/in", Write));
        assert!(!a.allowed("dev1", Some("alice"), "users/bob/in", Read));
        assert!(a.allowed("d", Some("u"), "out/u-d", Write));
        // A pattern with %u does not match an anonymous client (not even with an empty name).
        assert!(!a.allowed("dev1", None, "users//in", Read));
        assert!(!a.allowed("dev1", None, "out/-dev1", Write));
    }

    #[test]
    fn patterns_refuse_wildcards_in_client_id_or_user_name() {
        let a = acl("pattern readwrite devices/%c/#\n");
        assert!(!a.allowed("+", None, "devices/x/y", Read));
        assert!(!a.allowed("#", None, "devices/#/y", Read));
        assert!(!a.allowed("ok", Some("a#"), "devices/ok/y", Read));
        // Without patterns, such names are not refused by this rule.
        let b = acl("topic readwrite t\n");
        assert!(b.allowed("+", None, "t", Read));
    }

    #[test]
    fn deny_pattern() {
        let a = acl("pattern readwrite home/%u/#\npattern deny home/%u/private\n");
        assert!(a.allowed("c", Some("alice"), "home/alice/x", Write));
        assert!(!a.allowed("c", Some("alice"), "home/alice/private", Read));
    }

    #[test]
    fn no_matching_rule_is_refused_and_dollar_topics_need_dollar_rules() {
        let a = acl("topic readwrite #\n");
        assert!(a.allowed("c", None, "anything/at/all", Write));
        assert!(!a.allowed("c", None, "$SYS/broker/uptime", Read));
        let b = acl("topic read $SYS/#\n");
        assert!(b.allowed("c", None, "$SYS/broker/uptime", Read));
        assert!(!b.allowed("c", None, "x", Read));
        // An empty file refuses everything.
        assert!(!acl("").allowed("c", None, "x", Read));
        assert!(!acl("# nothing\n").allowed("c", Some("u"), "x", Write));
    }

    #[test]
    fn subscribe_checks_the_filter_against_read_rules() {
        let a = acl("user alice\ntopic read sensors/+/temp\ntopic write cmd/#\n\
             topic deny sensors/secret/#\ntopic read sensors/secret/public\n");
        let c = a.for_client("c", Some("alice"));
        assert!(c.allowed("sensors/+/temp", Subscribe));
        assert!(c.allowed("sensors/kitchen/temp", Subscribe));
        // Wider than the rule: granted (mosquitto delivers the readable part), messages are
        // filtered per delivery with Read.
        assert!(c.allowed("sensors/#", Subscribe));
        assert!(c.allowed("#", Subscribe));
        assert!(c.allowed("$share/g/sensors/+/temp", Subscribe));
        // No overlap with any read rule: refused.
        assert!(!c.allowed("cmd/#", Subscribe));
        assert!(!c.allowed("sensors/kitchen/humidity", Subscribe));
        assert!(!c.allowed("$share/g/cmd/x", Subscribe));
        assert!(!c.allowed("$SYS/#", Subscribe));
        // Entirely inside a deny rule: refused, even though a read rule overlaps.
        assert!(!c.allowed("sensors/secret/temp", Subscribe));
        assert!(!c.allowed("sensors/secret/#", Subscribe));
        // Delivery checks still filter.
        assert!(c.allowed("sensors/kitchen/temp", Read));
        assert!(!c.allowed("sensors/secret/temp", Read));
    }

    #[test]
    fn subscribe_with_patterns() {
        let a = acl("pattern read clients/%c/#\n");
        let c = a.for_client("dev7", None);
        assert!(c.allowed("clients/dev7/#", Subscribe));
        assert!(c.allowed("clients/+/x", Subscribe));
        assert!(!c.allowed("clients/dev8/#", Subscribe));
    }

    #[test]
    fn allow_all_allows_everything() {
        let c = ClientAcl::allow_all();
        for access in [Read, Write, Subscribe] {
            assert!(c.allowed("$SYS/x", access));
            assert!(c.allowed("#", access));
        }
    }

    #[test]
    fn access_words_and_topics_with_spaces() {
        // The topic is the rest of the line, trimmed: it may hold spaces.
        let b = acl("topic read  spaced topic/x \ntopic write\n");
        assert!(b.allowed("c", None, "spaced topic/x", Read));
        // One word alone is the topic, readwrite.
        assert!(b.allowed("c", None, "write", Read));
        assert!(b.allowed("c", None, "write", Write));
    }

    #[test]
    fn each_error_names_file_and_line() {
        assert_eq!(
            error("# c\ntopic bogus a/b\n"),
            "acl:2: bad access 'bogus' (expected read, write, readwrite or deny)"
        );
        assert_eq!(error("\n\ntopic\n"), "acl:3: missing topic after 'topic'");
        assert_eq!(
            error("pattern   \n"),
            "acl:1: missing topic after 'pattern'"
        );
        assert_eq!(error("user\n"), "acl:1: missing user name after 'user'");
        assert_eq!(
            error("topic read a/#/b\n"),
            "acl:1: invalid topic filter 'a/#/b'"
        );
        assert_eq!(
            error("pattern write a+/%c\n"),
            "acl:1: invalid topic filter 'a+/%c'"
        );
        assert_eq!(
            error("topic read a\nusers alice\n"),
            "acl:2: unknown keyword 'users' (expected topic, pattern or user)"
        );
        let e = Acl::load("/nonexistent/midge/acl").unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/midge/acl: cannot read:"), "{e}");
    }

    #[test]
    fn a_client_acl_keeps_its_user_name_for_a_reload() {
        let a = acl("user alice\ntopic read t/#\n");
        assert_eq!(a.for_client("c", Some("alice")).username(), Some("alice"));
        assert_eq!(a.for_client("c", None).username(), None);
        let open = ClientAcl::allow_all_for(Some("alice"));
        assert!(open.allowed("x", Read));
        // Compiled again from what it kept, against a new file.
        let b = acl("user alice\ntopic read u/#\n");
        let again = b.for_client("c", open.username());
        assert!(again.allowed("u/1", Read) && !again.allowed("t/1", Read));
    }

    #[test]
    fn substitution_is_textual() {
        assert_eq!(substitute("a/%c/%u/%x/%", "id", "u"), "a/id/u/%x/%");
        assert_eq!(substitute("%c%c", "ab", ""), "abab");
    }
}
