//! Requests, replies and framing of the control socket. A frame is a 4-byte big-endian length
//! followed by that many bytes of JSON; the reader checks the length against a bound before it
//! allocates, so a confused or hostile peer cannot make either side allocate gigabytes.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Largest request the daemon reads (requests are a few hundred bytes).
pub const MAX_REQUEST: u32 = 64 * 1024;
/// Largest reply the CLI reads (a full verdict listing of millions of entries).
pub const MAX_REPLY: u32 = 1 << 30;

/// What the CLI asks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Add to the deny list (manual). `ttl_secs: None` = until unblocked.
    Block {
        net: IpNet,
        ttl_secs: Option<u64>,
        reason: Option<String>,
        force: bool,
    },
    Unblock {
        net: IpNet,
    },
    /// Add to the allow list (manual).
    Allow {
        net: IpNet,
        ttl_secs: Option<u64>,
        reason: Option<String>,
    },
    Unallow {
        net: IpNet,
    },
    List {
        what: ListWhat,
    },
    Stats,
    Status,
    /// What the daemon holds for one address (allow/deny match, cached verdict).
    Lookup {
        ip: IpAddr,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ListWhat {
    Blocked,
    Allowed,
    Verdicts,
    All,
}

/// The daemon's answer: `Ok` with a body, or an error sentence for the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "one short-lived reply per request; boxing buys nothing"
)]
pub enum Reply {
    Ok { body: Body },
    Error { message: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "one short-lived reply per request; boxing buys nothing"
)]
pub enum Body {
    /// A change was applied (to the maps and the state file) before this reply was sent.
    Done {
        message: String,
    },
    List {
        entries: Vec<ListedEntry>,
    },
    Stats(StatsReply),
    Status(StatusReply),
    Lookup(LookupReply),
}

/// One line of `mxscreen list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListedEntry {
    /// `blocked`, `allowed` or `verdict`.
    pub list: String,
    pub net: IpNet,
    /// `pass`/`limit`/`drop` for verdicts; `drop`/`pass` for the lists.
    pub action: String,
    /// `manual`, `config`, `self` (the host's own addresses), `reputation`, `tempfail`, `feed`.
    pub source: String,
    pub reason: Option<String>,
    /// Unix seconds, when known (manual entries).
    pub created: Option<u64>,
    /// Unix seconds; `None` = never.
    pub expires: Option<u64>,
    /// SYNs this entry decided.
    pub hits: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsReply {
    /// Datapath counters summed over CPUs, by name.
    pub datapath: Vec<(String, u64)>,
    /// Cached verdicts by action.
    pub verdicts_by_action: Vec<(String, u64)>,
    /// Cached verdicts by reason.
    pub verdicts_by_reason: Vec<(String, u64)>,
    /// The reputation engine's counters (lookups, answers, budget drops, error codes...).
    pub engine: serde_json::Value,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    pub version: String,
    pub uptime_secs: u64,
    pub config_file: Option<String>,
    pub observe: bool,
    pub first_contact: String,
    pub ports: Vec<u16>,
    pub interfaces: Vec<InterfaceStatus>,
    pub programs: Vec<(String, u32)>,
    pub maps: Vec<MapFill>,
    pub resolver: serde_json::Value,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub mode: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapFill {
    pub name: String,
    pub entries: u64,
    pub max_entries: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LookupReply {
    pub ip: Option<IpAddr>,
    pub allowed: Option<ListedEntry>,
    pub blocked: Option<ListedEntry>,
    pub verdict: Option<ListedEntry>,
}

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

/// A TTL as the protocol carries it.
pub fn ttl_secs(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

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
