//! The HTTP plugin's workers: a few threads that make the HTTP calls, fed by a bounded queue.
//!
//! A shard never waits on them: it `try_send`s a job (a full queue is answered "deny, server
//! busy" on the spot) and goes on. An authentication job answers through its [`Later`]; an
//! ACL job sends its answer back to the asking shard's notes channel, which the shard drains
//! on its next hook call. Every failure (timeout, refused connection, bad answer) denies and
//! is logged without the password.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::cache::Answer;
use super::client::{post_json, Url};
use super::config::HttpConfig;
use super::shape::{self, Shape, Verdict, Who};
use super::Shared;
use crate::auth::Access;
use crate::plugin::{Decision, Later};

/// Work for a worker.
pub enum Job {
    Auth {
        who: Who,
        password: Option<Vec<u8>>,
        /// Where the answer is cached (a hash of client id, user name and password).
        cache_key: [u8; 32],
        later: Later,
    },
    Acl {
        who: Who,
        topic: String,
        access: Access,
        reply: Sender<Note>,
    },
}

/// What a worker tells the shard that asked.
#[derive(Debug)]
pub enum Note {
    Acl {
        client_id: String,
        topic: String,
        acc: u8,
        answer: Answer,
    },
}

/// Starts `n` workers on `jobs`.
pub fn start(n: usize, jobs: Receiver<Job>, shared: std::sync::Weak<Shared>) {
    for i in 0..n {
        let jobs = jobs.clone();
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("midge-http-{i}"))
            .spawn(move || {
                // Ends when every sender (the plugin) is gone.
                while let Ok(job) = jobs.recv() {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    // A bug in reading one answer must not cost the pool a worker: the job's
                    // `Later` is dropped in the unwind (a denial) and the worker takes the next.
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run(&shared, job)
                    }));
                    if ran.is_err() {
                        log::error!("plugin http: worker {i} recovered from a panic in one job");
                    }
                }
            });
        if let Err(e) = spawned {
            log::error!("plugin http: cannot start worker {i}: {e}");
        }
    }
}

fn run(shared: &Shared, job: Job) {
    let config = shared.config();
    match job {
        Job::Auth {
            who,
            password,
            cache_key,
            later,
        } => {
            let verdict = authenticate(shared, &config, &who, password.as_deref());
            if !config.cache_ttl.is_zero() {
                shared.cache_auth(cache_key, verdict, Instant::now() + config.cache_ttl);
            }
            let decision = match verdict {
                Verdict::Allow { superuser } => {
                    // Before the answer, so it is there when the client connects.
                    shared.hand_off(&who.client_id, superuser);
                    Decision::Allow
                }
                Verdict::Deny => Decision::Deny,
                Verdict::Ignore => Decision::Pass,
            };
            later.answer(decision);
        }
        Job::Acl {
            who,
            topic,
            access,
            reply,
        } => {
            let answer = match acl(shared, &config, &who, &topic, access) {
                Verdict::Allow { .. } => Answer::Allow,
                Verdict::Deny => Answer::Deny,
                Verdict::Ignore => Answer::Pass,
            };
            let _ = reply.send(Note::Acl {
                client_id: who.client_id,
                topic,
                acc: shape::acc(access),
                answer,
            });
        }
    }
}

/// One POST, its answer read in `shape`; every failure is a logged denial.
fn call(
    shared: &Shared,
    config: &HttpConfig,
    what: &str,
    url: &Url,
    body: &[u8],
    who: &Who,
) -> Verdict {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    match post_json(url, body, config.timeout, config.tls.as_ref()) {
        Ok(resp) => {
            let v = shape::verdict(config.shape, &resp);
            log::debug!(
                "plugin http: {what} for client {:?}: HTTP {} -> {v:?} in {:?}",
                who.client_id,
                resp.status,
                started.elapsed()
            );
            v
        }
        Err(e) => {
            let why = match e.kind() {
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    format!("timed out after {} ms", config.timeout.as_millis())
                }
                _ => e.to_string(),
            };
            log::warn!(
                "plugin http: {what} for client {:?} (user {:?}) at {}:{}{}: {why}; denied",
                who.client_id,
                who.username.as_deref().unwrap_or(""),
                url.host,
                url.port,
                url.path
            );
            Verdict::Deny
        }
    }
}

fn authenticate(
    shared: &Shared,
    config: &HttpConfig,
    who: &Who,
    password: Option<&[u8]>,
) -> Verdict {
    let Some(url) = &config.auth_url else {
        return Verdict::Ignore;
    };
    let body = shape::auth_body(config.shape, who, password);
    let verdict = call(shared, config, "authentication", url, &body, who);
    match (verdict, config.shape, &config.superuser_url) {
        (Verdict::Allow { .. }, Shape::GoAuth, Some(su)) => {
            let superuser = matches!(
                call(
                    shared,
                    config,
                    "superuser check",
                    su,
                    &shape::superuser_body(who),
                    who
                ),
                Verdict::Allow { .. }
            );
            Verdict::Allow { superuser }
        }
        (v, _, _) => v,
    }
}

fn acl(shared: &Shared, config: &HttpConfig, who: &Who, topic: &str, access: Access) -> Verdict {
    let Some(url) = &config.acl_url else {
        return Verdict::Ignore;
    };
    match shape::acl_body(config.shape, who, topic, access) {
        Some(body) => call(shared, config, "ACL check", url, &body, who),
        None => Verdict::Ignore,
    }
}
