//! Framing of the control socket: a 4-byte big-endian length, then that many bytes of JSON.
//! The reader checks the length against a bound before it allocates, so a confused or
//! hostile peer cannot make either side allocate gigabytes.

use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Largest request the daemon reads (requests are a few hundred bytes).
pub const MAX_REQUEST: u32 = 64 * 1024;
/// Largest reply the CLI reads (a full verdict listing of millions of entries).
pub const MAX_REPLY: u32 = 1 << 30;

/// Errors of the framing layer.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes is over the limit of {1}")]
    TooLarge(u32, u32),
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes one message as a frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let bytes = serde_json::to_vec(msg)?;
    let len = u32::try_from(bytes.len()).map_err(|_| FrameError::TooLarge(u32::MAX, u32::MAX))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes and parses it.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: u32,
) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(FrameError::TooLarge(len, max));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await?;
    Ok(serde_json::from_slice(&buf)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::Request;

    #[tokio::test]
    async fn frames_round_trip_and_are_bounded() {
        let req = Request::Block {
            net: "192.0.2.0/24".parse().unwrap(),
            ttl_secs: Some(60),
            reason: Some("bot".into()),
            force: false,
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).await.unwrap();
        let back: Request = read_frame(&mut buf.as_slice(), MAX_REQUEST).await.unwrap();
        assert_eq!(back, req);
        // A length over the bound is refused before anything is allocated.
        let huge = [0xff, 0xff, 0xff, 0xff];
        let err = read_frame::<_, Request>(&mut huge.as_slice(), MAX_REQUEST)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(u32::MAX, MAX_REQUEST)));
        // Garbage JSON is an error, not a panic.
        let mut bad = 3u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"{x}");
        assert!(matches!(
            read_frame::<_, Request>(&mut bad.as_slice(), MAX_REQUEST).await,
            Err(FrameError::Json(_))
        ));
        assert!(matches!(
            read_frame::<_, Request>(&mut [].as_slice(), MAX_REQUEST).await,
            Err(FrameError::Closed)
        ));
    }
}
