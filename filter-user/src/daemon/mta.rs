//! The MTA's side door: the query socket (Exim) and the Postfix policy service, served on a
//! thread of their own.
//!
//! Why a thread of their own: the answers must never wait on the main loop, which owns the
//! maps and is sometimes busy for a while (the minute's sweep of a million verdicts), nor on
//! the engine's DNS work. A task of the daemon's shared runtime
//! woken onto a blocked worker can sit there until that worker is free, so the MTA's sockets
//! get a current-thread runtime on a dedicated thread, answering from a second handle on the
//! pinned maps and the shared evidence cache: a few map lookups (the latency, in and out of a
//! sweep, is in BENCHMARKS.md, "Daemon").

use std::{os::unix::net::UnixListener, sync::Arc, thread::JoinHandle};

use anyhow::{Context as _, Result, bail};
use nix::unistd::Gid;
use tokio::sync::oneshot;

use crate::{
    config::{
        Config,
        mta::{MTA_GROUPS, POSTFIX_GROUPS},
    },
    datapath::Datapath,
    fleet::NewPeers,
    policy_service::{
        Listen,
        server::{PolicyListener, Service},
    },
    query::{EvidenceCache, MtaAsks, Oracle},
    socket_file::{self, SocketFile},
};

/// Mode of the MTA's Unix sockets: the MTA's group may connect, nobody else.
const MODE: u32 = 0o660;
/// The answering thread's nice value: the MTA holds a connection open while it waits, so on
/// a loaded host (content scanners, the daemon's own sweep) the answer goes first. Needs
/// CAP_SYS_NICE (the packaged unit grants it); without it the thread keeps the daemon's
/// priority (logged).
const NICE: i32 = -10;

/// Raises the calling thread's priority (Linux: `setpriority` on thread id 0 is this thread).
fn raise_priority() {
    // SAFETY: setpriority has no memory-safety preconditions.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    if rc != 0 {
        tracing::info!(error = %std::io::Error::last_os_error(), "the MTA sockets' thread keeps the daemon's priority");
    }
}

/// The running side door; dropping it stops the thread and removes the socket files.
pub struct MtaDoor {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _files: Vec<SocketFile>,
}

impl Drop for MtaDoor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The group a socket is given: `name` if set (it must exist), else the first of `auto`
/// that exists, else none (the daemon's own).
fn socket_group(key: &str, name: &str, auto: &[&str]) -> Result<Option<(String, Gid)>> {
    if name.is_empty() {
        return Ok(socket_file::first_group(auto).map(|(n, g)| (n.to_owned(), g)));
    }
    match socket_file::group_id(name)? {
        Some(g) => Ok(Some((name.to_owned(), g))),
        None => bail!("{key}: there is no group {name:?} on this host"),
    }
}

/// Binds the configured sockets and starts serving them; `None` when both are off.
pub fn start(
    cfg: &Config,
    maps: &dyn Datapath,
    evidence: Arc<EvidenceCache>,
    peers: NewPeers,
    asks: Arc<MtaAsks>,
) -> Result<Option<MtaDoor>> {
    let mut files = Vec::new();
    let query = bind_query(cfg, &mut files)?;
    let policy = bind_policy(cfg, &mut files)?;
    if query.is_none() && policy.is_none() {
        return Ok(None);
    }
    let oracle = Arc::new(Oracle::new(
        maps.reader()?,
        evidence,
        Arc::new(peers),
        asks,
        cfg.query.wait_max,
    ));
    let limit_action = cfg.policy_service.limit_action.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the MTA sockets' runtime")?;
    let thread = std::thread::Builder::new()
        .name("mxscreen-mta".into())
        .spawn(move || {
            raise_priority();
            rt.block_on(serve(query, policy, oracle, limit_action, stopped));
        })
        .context("starting the MTA sockets' thread")?;
    Ok(Some(MtaDoor {
        stop: Some(stop),
        thread: Some(thread),
        _files: files,
    }))
}

/// The query socket, bound with its group, if configured (its file kept in `files`).
fn bind_query(cfg: &Config, files: &mut Vec<SocketFile>) -> Result<Option<UnixListener>> {
    if cfg.query.socket.as_os_str().is_empty() {
        return Ok(None);
    }
    let group = socket_group("query.group", &cfg.query.group, MTA_GROUPS)?;
    let (l, f) = socket_file::bind(
        &cfg.query.socket,
        MODE,
        group.as_ref().map(|g| g.1),
        "query socket",
    )?;
    tracing::info!(socket = %cfg.query.socket.display(), group = group.map(|g| g.0).unwrap_or_else(|| "root".into()), "query socket ready");
    files.push(f);
    Ok(Some(l))
}

/// The policy service's socket, bound, if configured (a Unix socket's file kept in `files`).
fn bind_policy(cfg: &Config, files: &mut Vec<SocketFile>) -> Result<Option<Bound>> {
    let policy = match &cfg.policy_service.listen {
        Listen::Off => None,
        Listen::Unix(path) => {
            let p = &cfg.policy_service;
            let group = socket_group("policy_service.group", &p.group, POSTFIX_GROUPS)?;
            let (l, f) = socket_file::bind(
                path,
                MODE,
                group.as_ref().map(|g| g.1),
                "policy service socket",
            )?;
            files.push(f);
            Some(Bound::Unix(l))
        }
        Listen::Inet(addr) => Some(Bound::Inet(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("binding the policy service to {addr}"))?,
        )),
    };
    if let Some(p) = &policy {
        p.set_nonblocking()?;
        tracing::info!(listen = %cfg.policy_service.listen, limit_action = %cfg.policy_service.limit_action, "policy service ready");
    }
    Ok(policy)
}

/// Serves the bound sockets on the side door's runtime until `stopped`.
async fn serve(
    query: Option<UnixListener>,
    policy: Option<Bound>,
    oracle: Arc<Oracle>,
    limit_action: String,
    stopped: oneshot::Receiver<()>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = query {
        match tokio::net::UnixListener::from_std(l) {
            Ok(l) => {
                tasks.spawn(crate::query::server::serve(l, oracle.clone()));
            }
            Err(e) => tracing::error!(error = %e, "query socket unusable"),
        }
    }
    if let Some(p) = policy {
        match p.into_tokio() {
            Ok(l) => {
                let service = Arc::new(Service {
                    oracle,
                    limit_action,
                });
                tasks.spawn(crate::policy_service::server::serve(l, service));
            }
            Err(e) => tracing::error!(error = %e, "policy socket unusable"),
        }
    }
    let _ = stopped.await;
    tasks.shutdown().await;
}

/// A policy socket bound on the main thread (so errors stop the start-up), served on the
/// side door's thread.
enum Bound {
    Unix(UnixListener),
    Inet(std::net::TcpListener),
}

impl Bound {
    fn set_nonblocking(&self) -> Result<()> {
        match self {
            Bound::Unix(l) => l.set_nonblocking(true),
            Bound::Inet(l) => l.set_nonblocking(true),
        }
        .context("making the policy socket non-blocking")
    }

    fn into_tokio(self) -> std::io::Result<PolicyListener> {
        Ok(match self {
            Bound::Unix(l) => PolicyListener::Unix(tokio::net::UnixListener::from_std(l)?),
            Bound::Inet(l) => PolicyListener::Inet(tokio::net::TcpListener::from_std(l)?),
        })
    }
}
