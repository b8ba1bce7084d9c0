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
        FromBody, ListChunk, ListWhat, ListedEntry, LookupReply, Reply, Request, StatsReply,
        StatusReply,
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

    /// Asks for a listing; its entries arrive in chunks from [`ListStream::next_chunk`].
    pub async fn list(self, what: ListWhat) -> Result<ListStream, ClientError> {
        let mut stream = self.connect().await?;
        self.send(&mut stream, &Request::List { what }).await?;
        Ok(ListStream {
            client: self,
            stream: Some(stream),
        })
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

    /// Reads feed `name` now; returns the daemon's sentence once it is loaded, or its
    /// refusal (the file unreadable, or held back without `force`).
    pub async fn feed_reload(self, name: String, force: bool) -> Result<String, ClientError> {
        self.call(Request::FeedReload { name, force }).await
    }

    /// Sends `req` and takes the reply's body as `T`.
    async fn call<T: FromBody>(&self, req: Request) -> Result<T, ClientError> {
        let mut stream = self.connect().await?;
        self.send(&mut stream, &req).await?;
        self.read(&mut stream).await
    }

    /// Writes the request. The daemon may answer and close before reading it (a refused
    /// peer): then its answer, not our broken pipe, is what the operator needs to read.
    async fn send(&self, stream: &mut UnixStream, req: &Request) -> Result<(), ClientError> {
        match write_frame(stream, req).await {
            Ok(()) => Ok(()),
            Err(e) => match self.read::<String>(stream).await {
                Err(refused @ ClientError::Daemon(_)) => Err(refused),
                _ => Err(self.protocol(e)),
            },
        }
    }

    /// Reads one reply frame as `T`.
    async fn read<T: FromBody>(&self, stream: &mut UnixStream) -> Result<T, ClientError> {
        let reply: Reply = read_frame(stream, MAX_REPLY)
            .await
            .map_err(|e| self.protocol(e))?;
        match reply {
            Reply::Ok { body } => T::from_body(body)
                .ok_or_else(|| self.protocol("the reply does not answer the request")),
            Reply::Error { message } => Err(ClientError::Daemon(message)),
        }
    }

    fn protocol(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol(self.path.display().to_string(), e.to_string())
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

/// A listing arriving in chunks, as the daemon reads its maps: the reader holds one chunk at a
/// time however many entries there are.
pub struct ListStream {
    client: Client,
    stream: Option<UnixStream>,
}

impl ListStream {
    /// The next chunk of entries; `None` once the listing is complete.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<ListedEntry>>, ClientError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        let chunk: ListChunk = self.client.read(stream).await?;
        if !chunk.more {
            self.stream = None;
        }
        Ok(Some(chunk.entries))
    }

    /// Every remaining entry (for callers that want them all, e.g. tests).
    pub async fn collect(mut self) -> Result<Vec<ListedEntry>, ClientError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            all.extend(chunk);
        }
        Ok(all)
    }
}
