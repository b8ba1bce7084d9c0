//! Daemon side of the control socket. Connections are served concurrently, but every request
//! is handed to the daemon's main loop (which owns the maps and the state file) and answered
//! from there, so requests never race each other or the verdict writer.

use std::path::Path;

use anyhow::{Context as _, Result};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    frame::{FrameError, MAX_REQUEST, read_frame, write_frame},
    protocol::{Reply, Request},
};
use crate::socket_file::{self, SocketFile};

/// A request and where its reply goes.
pub type Call = (Request, oneshot::Sender<Reply>);

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

    /// Starts accepting; each request is sent to `calls` and its reply written back.
    pub fn serve(&mut self, calls: mpsc::Sender<Call>) -> JoinHandle<()> {
        let listener = self.listener.take().expect("serve is called once");
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(connection(stream, calls.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        })
    }
}

async fn connection(mut stream: UnixStream, calls: mpsc::Sender<Call>) {
    // The socket is mode 0600 already; checking the peer's credentials as well keeps the
    // rule "root only" even if someone loosens the file mode.
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    if uid != Some(0) {
        let msg = "permission denied: the mxscreen control socket is for root only".to_owned();
        let _ = write_frame(&mut stream, &Reply::Error { message: msg }).await;
        return;
    }
    loop {
        let req: Request = match read_frame(&mut stream, MAX_REQUEST).await {
            Ok(r) => r,
            Err(FrameError::Closed) => return,
            Err(e) => {
                let _ = write_frame(
                    &mut stream,
                    &Reply::Error {
                        message: format!("bad request: {e}"),
                    },
                )
                .await;
                return;
            }
        };
        let (tx, rx) = oneshot::channel();
        if calls.send((req, tx)).await.is_err() {
            return; // daemon shutting down
        }
        let reply = rx.await.unwrap_or(Reply::Error {
            message: "the daemon is shutting down".into(),
        });
        if write_frame(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}
