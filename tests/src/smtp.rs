//! A minimal SMTP client for the MTA benchmark: thousands of sessions without a process per
//! session (swaks, used by the end-to-end suite, costs a Perl start each).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The SYN was never answered within the connect timeout (dropped before the MTA).
    NoConnection,
    /// The MTA refused the recipient (a 5xx), as its DNSBL ACL does.
    Refused,
    /// The message was accepted (250 after DATA).
    Delivered,
    /// Anything else: a reset, a timeout mid-session, an unexpected reply.
    Failed,
}

impl Outcome {
    /// Whether the connection reached the MTA (the handshake completed).
    pub fn reached_mta(self) -> bool {
        self != Outcome::NoConnection
    }
}

/// One SMTP session from `src` (in the calling thread's namespace) to `dst`: the banner,
/// EHLO, MAIL, RCPT and, if the recipient is accepted and `send` holds, a short message.
pub fn session(src: IpAddr, dst: SocketAddr, connect: Duration, send: bool) -> Outcome {
    let sock = match socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::STREAM,
        None,
    ) {
        Ok(s) => s,
        Err(_) => return Outcome::Failed,
    };
    if sock.bind(&SocketAddr::new(src, 0).into()).is_err() {
        return Outcome::Failed;
    }
    if sock.connect_timeout(&dst.into(), connect).is_err() {
        return Outcome::NoConnection;
    }
    let stream: TcpStream = sock.into();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    dialogue(stream, send).unwrap_or(Outcome::Failed)
}

fn dialogue(stream: TcpStream, send: bool) -> Option<Outcome> {
    let mut out = stream.try_clone().ok()?;
    let mut r = BufReader::new(stream);
    let mut cmd = |line: &str| -> Option<u16> {
        if !line.is_empty() {
            out.write_all(line.as_bytes()).ok()?;
        }
        reply(&mut r)
    };
    if cmd("")? != 220 || cmd("EHLO bench.clients.test\r\n")? != 250 {
        return None;
    }
    if cmd("MAIL FROM:<bench@clients.test>\r\n")? != 250 {
        return None;
    }
    match cmd("RCPT TO:<postmaster@e2e.test>\r\n")? {
        code if code >= 500 => {
            let _ = cmd("QUIT\r\n");
            return Some(Outcome::Refused);
        }
        250 if !send => {
            let _ = cmd("QUIT\r\n");
            return Some(Outcome::Failed);
        }
        250 => {}
        _ => return None,
    }
    if cmd("DATA\r\n")? != 354 {
        return None;
    }
    let body = "Subject: mxscreen MTA benchmark\r\n\r\nclean mail\r\n.\r\n";
    let delivered = cmd(body)? == 250;
    let _ = cmd("QUIT\r\n");
    Some(if delivered {
        Outcome::Delivered
    } else {
        Outcome::Failed
    })
}

/// Reads one (possibly multi-line) reply; its code.
fn reply(r: &mut BufReader<TcpStream>) -> Option<u16> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let code = line.get(..3)?.parse().ok()?;
        if line.as_bytes().get(3) != Some(&b'-') {
            return Some(code);
        }
    }
}
