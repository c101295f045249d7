//! [`AuthWorker`]: password checks off the event loop.
//!
//! A `$7$` check costs its iteration count in HMAC-SHA512s (101 by default, far more if an
//! operator raised `-I`); done on a shard's loop it would stall every other client of that shard.
//! So a shard hands the check to this small pool and carries on:
//!
//! ```text
//! start:    let worker = AuthWorker::new(2, 1024);                           // once, broker
//!           worker.ensure_running()?;    // at start, or at the reload that adds a password file
//!           let (client, replies) = worker.client(move || { let _ = waker.wake(); });
//!                                                                            // once per shard
//! CONNECT:  client.submit(AuthRequest { token, username, password, passwords }) // shard thread
//!           -> Err(request) if the queue is full: refuse (CONNACK 0x05 / 5.0 0x89 busy)
//! wake-up:  while let Ok(AuthResponse { token, allowed }) = replies.try_recv() { ... }
//! ```
//! `token` is the shard's own (e.g. connection slot + generation): a reply for a connection that
//! closed meanwhile must be dropped by the shard. The notify closure runs on a worker thread
//! after each reply is queued; a `mio::Waker::wake` fits (it coalesces).

use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};

use super::PasswordFile;

/// One password to check.
pub struct AuthRequest {
    /// The caller's identifier for this request, returned in the [`AuthResponse`].
    pub token: u64,
    /// User name from CONNECT.
    pub username: String,
    /// Password from CONNECT (empty if none was given). Wiped after the check.
    pub password: Vec<u8>,
    /// The file to check against: the connection's listener's (each listener may have its own
    /// under `per_listener_settings`).
    pub passwords: Arc<PasswordFile>,
}

impl std::fmt::Debug for AuthRequest {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("token", &self.token)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The outcome of one [`AuthRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthResponse {
    /// The request's token.
    pub token: u64,
    /// True if the user exists and the password is right.
    pub allowed: bool,
}

type Notify = Arc<dyn Fn() + Send + Sync>;

/// Where a check's outcome goes: the submitter's reply channel (then `notify`), or a
/// callback run on the worker thread (a plugin's `Later` answer, `plugin::builtin::password`).
enum Reply {
    Channel {
        reply: Sender<AuthResponse>,
        notify: Notify,
    },
    Then(Box<dyn FnOnce(bool) + Send>),
}

struct Job {
    request: AuthRequest,
    reply: Reply,
}

/// A pool of threads that verify passwords (see the module documentation).
///
/// The queue exists from the start and every shard holds a client of it, but the threads are
/// started only once a password file is in use ([`AuthWorker::ensure_running`]): a broker
/// without one keeps no idle threads, and a SIGHUP that adds the first password file starts
/// them without touching the shards.
pub struct AuthWorker {
    jobs: Option<Sender<Job>>,
    /// How many threads [`AuthWorker::ensure_running`] starts.
    wanted: usize,
    /// The queue's receiving end until the threads take it, then their handles.
    state: Mutex<Pool>,
}

struct Pool {
    jobs: Option<Receiver<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for AuthWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let threads = self.lock().threads.len();
        f.debug_struct("AuthWorker")
            .field("threads", &threads)
            .finish_non_exhaustive()
    }
}

impl AuthWorker {
    /// A pool of `threads` (at least 1) worker threads, not started yet, with room for
    /// `queue` (at least 1) pending requests across all clients.
    pub fn new(threads: usize, queue: usize) -> AuthWorker {
        let (tx, rx) = bounded::<Job>(queue.max(1));
        AuthWorker {
            jobs: Some(tx),
            wanted: threads.max(1),
            state: Mutex::new(Pool {
                jobs: Some(rx),
                threads: Vec::new(),
            }),
        }
    }

    /// [`AuthWorker::new`] with its threads started.
    pub fn start(threads: usize, queue: usize) -> io::Result<AuthWorker> {
        let worker = AuthWorker::new(threads, queue);
        worker.ensure_running()?;
        Ok(worker)
    }

    /// Starts the threads unless they run already (any thread; idempotent). Requests
    /// submitted before are kept in the queue and checked once they run.
    pub fn ensure_running(&self) -> io::Result<()> {
        let mut pool = self.lock();
        let Some(rx) = pool.jobs.take() else {
            return Ok(());
        };
        for i in 0..self.wanted {
            let jobs = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("midge-auth-{i}"))
                .spawn(move || run(jobs));
            match spawned {
                Ok(handle) => pool.threads.push(handle),
                // With none started, a later call tries again; with some, they serve.
                Err(e) if pool.threads.is_empty() => {
                    pool.jobs = Some(rx);
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Whether the threads were started.
    pub fn is_running(&self) -> bool {
        self.lock().jobs.is_none()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handle for one submitter (one per shard) and the receiver of its replies. `notify` is
    /// called on a worker thread after each reply is queued.
    pub fn client(
        &self,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> (AuthClient, Receiver<AuthResponse>) {
        let (reply, replies) = unbounded();
        let jobs = self
            .jobs
            .clone()
            .expect("AuthWorker is running until dropped");
        (
            AuthClient {
                jobs,
                reply,
                notify: Arc::new(notify),
            },
            replies,
        )
    }
}

impl Drop for AuthWorker {
    /// Stops the threads once every [`AuthClient`] is gone and the queue is drained.
    fn drop(&mut self) {
        drop(self.jobs.take());
        // Clients may still hold senders: do not wait for threads they keep alive.
        for handle in self.lock().threads.drain(..) {
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

fn run(rx: Receiver<Job>) {
    for mut job in rx.iter() {
        let allowed = job
            .request
            .passwords
            .verify(&job.request.username, &job.request.password);
        wipe(&mut job.request.password);
        match job.reply {
            Reply::Channel { reply, notify } => {
                let response = AuthResponse {
                    token: job.request.token,
                    allowed,
                };
                if reply.send(response).is_ok() {
                    notify();
                }
            }
            Reply::Then(done) => done(allowed),
        }
    }
}

/// Overwrites a password buffer before it is freed (`black_box` keeps the stores from being
/// optimised away as dead).
fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

/// A submitter's handle to an [`AuthWorker`] (one per shard; `Clone` is cheap).
#[derive(Clone)]
pub struct AuthClient {
    jobs: Sender<Job>,
    reply: Sender<AuthResponse>,
    notify: Notify,
}

impl std::fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthClient").finish_non_exhaustive()
    }
}

impl AuthClient {
    /// Queues a check; never blocks. Gives the request back if the queue is full or the worker
    /// is gone: the caller should refuse the client (server busy) rather than wait.
    #[allow(clippy::result_large_err)]
    pub fn submit(&self, request: AuthRequest) -> Result<(), AuthRequest> {
        let job = Job {
            request,
            reply: Reply::Channel {
                reply: self.reply.clone(),
                notify: self.notify.clone(),
            },
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => Err(job.request),
        }
    }

    /// Queues a check whose outcome is handed to `done` on the worker thread (the request's
    /// token is unused). Never blocks; `false` when the queue is full or the worker gone
    /// (`done` is dropped uncalled).
    pub fn submit_then(
        &self,
        request: AuthRequest,
        done: impl FnOnce(bool) + Send + 'static,
    ) -> bool {
        let job = Job {
            request,
            reply: Reply::Then(Box::new(done)),
        };
        self.jobs.try_send(job).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const BOB_6: &str = "bob:$6$i+0wlo2GzCeMo0dW$Mb2oRryLuE4ImUmPv48Lx+As8c5S8gH0NMug8aQ+qxILa2Jj/PV/NzwtkTvvusYHFRfVq+d7Dr3LtA8q/Fesww==\n";
    const ALICE_7: &str = "alice:$7$101$eCx8auHoBbV2xAaU$v4fSUS09BUcOChROO1dqFMT7yq6VBt/zLPTHJ+8rOy60pJar5gYhKY9rp7nUhCRHrnnFX0TAeiF2Lzad/LJZVA==\n";

    #[test]
    fn replies_come_back_with_their_token_and_notify() {
        let file = Arc::new(PasswordFile::parse(&format!("{BOB_6}{ALICE_7}"), "pw").unwrap());
        let worker = AuthWorker::start(2, 16).unwrap();
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let (client, replies) = worker.client(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        let cases = [
            (1, "bob", "hunter2", true),
            (2, "bob", "wrong", false),
            (3, "alice", "secret", true),
            (4, "nobody", "secret", false),
        ];
        for (token, user, pw, _) in cases {
            client
                .submit(AuthRequest {
                    token,
                    username: user.into(),
                    password: pw.into(),
                    passwords: file.clone(),
                })
                .unwrap();
        }
        let mut got: Vec<AuthResponse> = (0..cases.len())
            .map(|_| replies.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort_by_key(|r| r.token);
        for ((token, _, _, allowed), r) in cases.iter().zip(&got) {
            assert_eq!((r.token, r.allowed), (*token, *allowed));
        }
        assert_eq!(wakes.load(Ordering::SeqCst), cases.len());
        // Each request is checked against its own file: in this one bob's entry is gone.
        let reloaded = Arc::new(PasswordFile::parse(ALICE_7, "pw").unwrap());
        client
            .submit(AuthRequest {
                token: 9,
                username: "bob".into(),
                password: b"hunter2".to_vec(),
                passwords: reloaded,
            })
            .unwrap();
        let r = replies.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((r.token, r.allowed), (9, false));
    }

    #[test]
    fn requests_queued_before_the_threads_start_are_answered_once_they_run() {
        let file = Arc::new(PasswordFile::parse(BOB_6, "pw").unwrap());
        let worker = AuthWorker::new(2, 16);
        assert!(!worker.is_running());
        let (client, replies) = worker.client(|| {});
        client
            .submit(AuthRequest {
                token: 7,
                username: "bob".into(),
                password: b"hunter2".to_vec(),
                passwords: file,
            })
            .unwrap();
        assert!(replies.recv_timeout(Duration::from_millis(200)).is_err());
        worker.ensure_running().unwrap();
        worker.ensure_running().unwrap();
        assert!(worker.is_running());
        let r = replies.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((r.token, r.allowed), (7, true));
        assert_eq!(worker.lock().threads.len(), 2, "started once");
    }

    #[test]
    fn full_queue_gives_the_request_back() {
        // A slow file (many iterations) and a queue of 1 on one thread.
        let slow = super::super::PasswordHash::with_salt(
            b"pw",
            super::super::HashAlgorithm::Sha512Pbkdf2 { iterations: 20_000 },
            vec![1; 12],
        );
        let file = Arc::new(PasswordFile::parse(&format!("u:{slow}\n"), "pw").unwrap());
        let worker = AuthWorker::start(1, 1).unwrap();
        let (client, _replies) = worker.client(|| {});
        let req = |token| AuthRequest {
            token,
            username: "u".into(),
            password: b"pw".to_vec(),
            passwords: file.clone(),
        };
        let mut refused = 0;
        for token in 0..5 {
            if let Err(r) = client.submit(req(token)) {
                assert_eq!(r.token, token);
                refused += 1;
            }
        }
        assert!(
            refused >= 2,
            "queue of 1 + one busy thread: {refused} refused"
        );
    }
}
