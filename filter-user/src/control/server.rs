//! Daemon side of the control socket. Connections are served concurrently, but every request
//! is handed to the daemon's main loop (which owns the maps and the state file) and answered
//! from there, so requests never race each other or the verdict writer. A long answer (`list`
//! of a million verdicts) comes back as a stream of frames produced outside the main loop.
//!
//! The socket is root-only, but a stuck or careless client must still not wear the daemon
//! down: connections are bounded in number, idle ones time out, and accept errors are logged
//! at most once per [`ACCEPT_LOG_EVERY`].

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{Semaphore, mpsc, oneshot},
    task::JoinHandle,
    time::timeout,
};

use super::{
    frame::{FrameError, MAX_REQUEST, read_frame, write_frame},
    protocol::{Reply, Request},
};
use crate::socket_file::{self, SocketFile};

/// What the main loop answers: one reply, or a stream of replies (the last one ends it).
#[expect(
    clippy::large_enum_variant,
    reason = "one short-lived answer per request; boxing buys nothing"
)]
pub enum Answer {
    One(Reply),
    Stream(mpsc::Receiver<Reply>),
}

/// A request and where its answer goes.
pub type Call = (Request, oneshot::Sender<Answer>);

/// Connections served at once; more wait for a slot ([`SLOT_WAIT`]). Operators run a command
/// or two at a time; monitoring polls one.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections that may wait for a slot at once (a script firing commands in a burst); more
/// are told to try again and closed at once, so waiting costs a bounded number of fds.
pub const MAX_WAITING: usize = 64;
/// How long a connection waits for a slot before it is told to try again.
pub const SLOT_WAIT: Duration = Duration::from_secs(3);
/// How long a connection may sit without sending a request (also between requests).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one reply frame may take to be read by the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// At most one "accept failed" log line per this interval (at the fd limit accept fails in
/// a tight loop).
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The bound socket; the socket file is removed when this is dropped.
pub struct ControlSocket {
    _file: SocketFile,
    listener: Option<UnixListener>,
}

impl ControlSocket {
    /// Binds `path` with mode 0600. A socket file nobody answers on (left by a crash) is
    /// replaced; one that answers means another daemon runs, which is an error.
    pub async fn bind(path: &Path) -> Result<Self> {
        let (listener, file) = socket_file::bind(path, 0o600, None, "control socket")?;
        let listener =
            UnixListener::from_std(listener).context("registering the control socket")?;
        Ok(Self {
            _file: file,
            listener: Some(listener),
        })
    }

    /// Starts accepting; each request is sent to `calls` and its answer written back.
    pub fn serve(&mut self, calls: mpsc::Sender<Call>) -> JoinHandle<()> {
        let listener = self.listener.take().expect("serve is called once");
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let waiting = Arc::new(Semaphore::new(MAX_WAITING));
        tokio::spawn(async move {
            let mut failures = RateLimitedLog::default();
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            tokio::spawn(connection(stream, calls.clone(), slot));
                        }
                        Err(_) => match waiting.clone().try_acquire_owned() {
                            Ok(turn) => {
                                tokio::spawn(wait_for_slot(
                                    stream,
                                    calls.clone(),
                                    slots.clone(),
                                    turn,
                                ));
                            }
                            Err(_) => {
                                tokio::spawn(refuse(stream));
                            }
                        },
                    },
                    Err(e) => {
                        failures.warn(&e);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    }
}

/// "accept failed" at most once per [`ACCEPT_LOG_EVERY`], saying how many were not logged.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn warn(&mut self, e: &std::io::Error) {
        if self.last.is_some_and(|t| t.elapsed() < ACCEPT_LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, suppressed = self.suppressed, "control socket accept failed");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// Every slot is taken: waits up to [`SLOT_WAIT`] for one (holding a turn among the
/// [`MAX_WAITING`]), then serves the connection, or tells it to try again.
async fn wait_for_slot(
    stream: UnixStream,
    calls: mpsc::Sender<Call>,
    slots: Arc<Semaphore>,
    _turn: tokio::sync::OwnedSemaphorePermit,
) {
    match timeout(SLOT_WAIT, slots.acquire_owned()).await {
        Ok(Ok(slot)) => connection(stream, calls, slot).await,
        _ => refuse(stream).await,
    }
}

async fn refuse(mut stream: UnixStream) {
    let msg = format!(
        "too many control connections (at most {MAX_CONNECTIONS}, and {MAX_WAITING} waiting up to {}s); try again in a moment",
        SLOT_WAIT.as_secs()
    );
    let _ = timeout(
        Duration::from_secs(1),
        write_frame(&mut stream, &Reply::Error { message: msg }),
    )
    .await;
}

async fn connection(
    mut stream: UnixStream,
    calls: mpsc::Sender<Call>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    // The socket is mode 0600 already; checking the peer's credentials as well keeps the
    // rule "root only" even if someone loosens the file mode.
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    if uid != Some(0) {
        let msg = "permission denied: the mxscreen control socket is for root only".to_owned();
        let _ = send(&mut stream, &Reply::Error { message: msg }).await;
        return;
    }
    loop {
        let req: Request = match timeout(IDLE_TIMEOUT, read_frame(&mut stream, MAX_REQUEST)).await {
            Err(_) | Ok(Err(FrameError::Closed)) => return,
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let message = format!("bad request: {e}");
                let _ = send(&mut stream, &Reply::Error { message }).await;
                return;
            }
        };
        let (tx, rx) = oneshot::channel();
        if calls.send((req, tx)).await.is_err() {
            return; // daemon shutting down
        }
        let answer = rx.await.unwrap_or(Answer::One(Reply::Error {
            message: "the daemon is shutting down".into(),
        }));
        let sent = match answer {
            Answer::One(reply) => send(&mut stream, &reply).await,
            Answer::Stream(mut frames) => {
                let mut ok = true;
                while let Some(reply) = frames.recv().await {
                    if !send(&mut stream, &reply).await {
                        ok = false;
                        break;
                    }
                }
                ok
            }
        };
        if !sent {
            return;
        }
    }
}

/// Writes one frame within [`WRITE_TIMEOUT`]; `false` when the client is gone or stuck.
async fn send(stream: &mut UnixStream, reply: &Reply) -> bool {
    matches!(
        timeout(WRITE_TIMEOUT, write_frame(stream, reply)).await,
        Ok(Ok(()))
    )
}
