//! The query socket, for Exim's `readsocket`: the client writes one address and `\n` (or
//! closes its side), the daemon answers one line ([`Answer::line`]) and closes — Exim reads
//! until EOF. Bad input (not an address, a line over [`MAX_LINE`] bytes) gets a one-line
//! `action=unknown error="..."`; a client that sends nothing within [`READ_TIMEOUT`] is closed
//! on. Connections are served concurrently, at most [`MAX_CONNECTIONS`] at a time.

use std::{net::IpAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};

use super::{Answer, Oracle};

/// Longest request line: an IPv6 address is at most 45 characters.
pub const MAX_LINE: usize = 256;
/// How long a client may take to send its line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 512;

/// Serves the query socket until the task is dropped.
pub async fn serve(listener: UnixListener, oracle: Arc<Oracle>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let oracle = oracle.clone();
                tokio::spawn(async move {
                    connection(stream, &oracle).await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "query socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, oracle: &Oracle) {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::with_capacity(64);
    // The line, its newline, and one byte more to tell a line too long.
    let mut reader = BufReader::new(read).take(MAX_LINE as u64 + 2);
    let answer = match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await
    {
        Err(_) => return,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "query socket read failed");
            return;
        }
        Ok(Ok(_)) => answer_for(&line, oracle).await,
    };
    let _ = write.write_all(answer.line().as_bytes()).await;
    let _ = write.shutdown().await;
}

/// The answer to one request line (with or without its newline, which [`MAX_LINE`] does not
/// count).
pub async fn answer_for(line: &[u8], oracle: &Oracle) -> Answer {
    if line.strip_suffix(b"\n").unwrap_or(line).len() > MAX_LINE {
        return Answer::error(format!("line too long: at most {MAX_LINE} bytes"));
    }
    match parse_address(line) {
        Some(ip) => oracle.answer(ip).await,
        None => Answer::error("not an IP address: send one address and a newline"),
    }
}

/// An address, trimmed of white space (and `\r\n`), an IPv4-mapped one as its IPv4 form;
/// `None` for anything else.
pub fn parse_address(line: &[u8]) -> Option<IpAddr> {
    crate::net::parse_ip(std::str::from_utf8(line).ok()?.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_garbage() {
        assert_eq!(
            parse_address(b"192.0.2.1\n"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            parse_address(b" 2001:db8::1\r\n"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_address(b"192.0.2.1"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            parse_address(b"::ffff:192.0.2.1\n"),
            Some("192.0.2.1".parse().unwrap())
        );
        for bad in [
            &b""[..],
            b"\n",
            b"hello\n",
            b"192.0.2.0/24\n",
            b"\xff\xfe\n",
            b"1 2\n",
        ] {
            assert_eq!(parse_address(bad), None, "{bad:?}");
        }
    }
}
