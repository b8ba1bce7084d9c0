//! CLI side of the control socket: one method per request, each returning the reply's own
//! type. It finds out what is wrong before connecting, so the operator reads "the daemon is
//! not running; start it with `mxscreen run`", not "os error 2".

use std::{
    io::ErrorKind,
    net::IpAddr,
    os::unix::fs::FileTypeExt as _,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use tokio::net::UnixStream;

use super::{
    frame::{MAX_REPLY, read_frame, write_frame},
    protocol::{
        FromBody, ListWhat, ListedEntry, LookupReply, Reply, Request, StatsReply, StatusReply,
    },
};

/// Why a request did not get an answer, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the mxscreen daemon is not running (no control socket at {0}); start it with `mxscreen run`"
    )]
    NotRunning(String),
    #[error("{0} is not a socket; is control.socket set to the right path?")]
    NotASocket(String),
    #[error("permission denied on {0}: the control socket is for root only (try sudo)")]
    Permission(String),
    #[error(
        "the mxscreen daemon is not running (stale control socket {0}); start it with `mxscreen run`"
    )]
    Refused(String),
    /// The daemon refused the request; its sentence says why.
    #[error("{0}")]
    Daemon(String),
    #[error("talking to the daemon at {0}: {1}")]
    Protocol(String, String),
}

impl ClientError {
    /// Whether the daemon simply is not there (as opposed to refusing or failing).
    pub fn is_not_running(&self) -> bool {
        matches!(self, Self::NotRunning(_) | Self::Refused(_))
    }
}

/// The daemon at a control socket. Each method sends one request on its own connection.
#[derive(Clone, Debug)]
pub struct Client {
    path: PathBuf,
}

impl Client {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a manual block; returns the daemon's sentence about it.
    pub async fn block(
        self,
        net: IpNet,
        ttl_secs: Option<u64>,
        reason: Option<String>,
        force: bool,
    ) -> Result<String, ClientError> {
        self.call(Request::Block {
            net,
            ttl_secs,
            reason,
            force,
        })
        .await
    }

    pub async fn unblock(self, net: IpNet) -> Result<String, ClientError> {
        self.call(Request::Unblock { net }).await
    }

    pub async fn allow(
        self,
        net: IpNet,
        ttl_secs: Option<u64>,
        reason: Option<String>,
    ) -> Result<String, ClientError> {
        self.call(Request::Allow {
            net,
            ttl_secs,
            reason,
        })
        .await
    }

    pub async fn unallow(self, net: IpNet) -> Result<String, ClientError> {
        self.call(Request::Unallow { net }).await
    }

    pub async fn list(self, what: ListWhat) -> Result<Vec<ListedEntry>, ClientError> {
        self.call(Request::List { what }).await
    }

    pub async fn stats(self) -> Result<StatsReply, ClientError> {
        self.call(Request::Stats).await
    }

    pub async fn status(self) -> Result<StatusReply, ClientError> {
        self.call(Request::Status).await
    }

    pub async fn lookup(self, ip: IpAddr) -> Result<LookupReply, ClientError> {
        self.call(Request::Lookup { ip }).await
    }

    /// Sends `req` and takes the reply's body as `T`.
    async fn call<T: FromBody>(&self, req: Request) -> Result<T, ClientError> {
        let p = self.path.display().to_string();
        let mut stream = self.connect().await?;
        write_frame(&mut stream, &req)
            .await
            .map_err(|e| ClientError::Protocol(p.clone(), e.to_string()))?;
        let reply: Reply = read_frame(&mut stream, MAX_REPLY)
            .await
            .map_err(|e| ClientError::Protocol(p.clone(), e.to_string()))?;
        match reply {
            Reply::Ok { body } => T::from_body(body).ok_or_else(|| {
                ClientError::Protocol(p, "the reply does not answer the request".into())
            }),
            Reply::Error { message } => Err(ClientError::Daemon(message)),
        }
    }

    async fn connect(&self) -> Result<UnixStream, ClientError> {
        let p = self.path.display().to_string();
        match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(ClientError::NotRunning(p)),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Err(ClientError::Permission(p));
            }
            Err(e) => return Err(ClientError::Protocol(p, e.to_string())),
            Ok(m) if !m.file_type().is_socket() => return Err(ClientError::NotASocket(p)),
            Ok(_) => {}
        }
        UnixStream::connect(&self.path)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::PermissionDenied => ClientError::Permission(p.clone()),
                ErrorKind::ConnectionRefused => ClientError::Refused(p.clone()),
                ErrorKind::NotFound => ClientError::NotRunning(p.clone()),
                _ => ClientError::Protocol(p.clone(), e.to_string()),
            })
    }
}
