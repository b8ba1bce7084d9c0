//! CLI side of the control socket: finds out what is wrong before connecting, so the operator
//! reads "the daemon is not running; start it with `mxscreen run`", not "os error 2".

use std::{io::ErrorKind, os::unix::fs::FileTypeExt as _, path::Path};

use tokio::net::UnixStream;

use super::protocol::{Body, MAX_REPLY, Reply, Request, read_frame, write_frame};

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
    #[error("{0}")]
    Daemon(String),
    #[error("talking to the daemon at {0}: {1}")]
    Protocol(String, String),
}

/// Sends one request and returns the daemon's answer.
pub async fn request(path: &Path, req: &Request) -> Result<Body, ClientError> {
    let p = path.display().to_string();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(ClientError::NotRunning(p)),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            return Err(ClientError::Permission(p));
        }
        Err(e) => return Err(ClientError::Protocol(p, e.to_string())),
        Ok(m) if !m.file_type().is_socket() => return Err(ClientError::NotASocket(p)),
        Ok(_) => {}
    }
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::PermissionDenied => ClientError::Permission(p.clone()),
            ErrorKind::ConnectionRefused => ClientError::Refused(p.clone()),
            ErrorKind::NotFound => ClientError::NotRunning(p.clone()),
            _ => ClientError::Protocol(p.clone(), e.to_string()),
        })?;
    write_frame(&mut stream, req)
        .await
        .map_err(|e| ClientError::Protocol(p.clone(), e.to_string()))?;
    let reply: Reply = read_frame(&mut stream, MAX_REPLY)
        .await
        .map_err(|e| ClientError::Protocol(p.clone(), e.to_string()))?;
    match reply {
        Reply::Ok { body } => Ok(body),
        Reply::Error { message } => Err(ClientError::Daemon(message)),
    }
}
