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
    match open(src, dst, connect) {
        Ok(stream) => dialogue(stream, send).unwrap_or(Outcome::Failed),
        Err(o) => o,
    }
}

/// A TCP connection from `src` to `dst` within `connect`, reads bounded to 15 s; the
/// outcome when there is none ([`Outcome::NoConnection`]: the SYN went unanswered).
fn open(src: IpAddr, dst: SocketAddr, connect: Duration) -> Result<TcpStream, Outcome> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|_| Outcome::Failed)?;
    sock.bind(&SocketAddr::new(src, 0).into())
        .map_err(|_| Outcome::Failed)?;
    sock.connect_timeout(&dst.into(), connect)
        .map_err(|_| Outcome::NoConnection)?;
    let stream: TcpStream = sock.into();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    Ok(stream)
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
    // A user, not postmaster: the README's snippets never refuse mail to postmaster.
    match cmd("RCPT TO:<user@e2e.test>\r\n")? {
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

/// One SMTP session from `src` to `dst` speaking `commands` in turn (each ending in CRLF;
/// after a `DATA` answered 354, the next is the message ending in `.` CRLF), and QUIT: the
/// banner's reply and each command's, each as its lines joined by a space. `None` when the
/// SYN is not answered within `connect`.
pub fn replies(
    src: IpAddr,
    dst: SocketAddr,
    connect: Duration,
    commands: &[&str],
) -> Option<Vec<String>> {
    let stream = open(src, dst, connect).ok()?;
    let mut out = stream.try_clone().ok()?;
    let mut r = BufReader::new(stream);
    let mut got = vec![reply_text(&mut r).unwrap_or_default()];
    for c in commands.iter().chain(&["QUIT\r\n"]) {
        if out.write_all(c.as_bytes()).is_err() {
            break;
        }
        got.push(reply_text(&mut r).unwrap_or_default());
    }
    Some(got)
}

/// One (possibly multi-line) reply as one line: `550 5.7.1 first ... rest`, the later lines'
/// code and enhanced code left out (MTAs wrap long texts and repeat both on each line).
fn reply_text(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut out = String::new();
    let mut enhanced = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        let last = line.as_bytes().get(3) != Some(&b'-');
        let text = line.get(4..).unwrap_or("");
        if out.is_empty() {
            enhanced = text.split_whitespace().next().unwrap_or("").to_owned();
            out = format!("{} {text}", line.get(..3).unwrap_or(line));
        } else {
            out.push(' ');
            out.push_str(
                text.strip_prefix(enhanced.as_str())
                    .map_or(text, str::trim_start),
            );
        }
        if last {
            return Some(out);
        }
    }
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
