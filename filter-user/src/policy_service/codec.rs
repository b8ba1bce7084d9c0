//! Postfix's SMTPD access policy delegation protocol as a tokio codec: a request is
//! `name=value` lines ended by an empty line; the reply is `action=...` and an empty line; the
//! connection is then reused for the next request. Lines and requests are bounded before
//! anything grows: a peer that sends more is malformed, and the server closes on it.

use std::io;

use bytes::{BufMut as _, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Longest attribute line (Postfix's longest are certificate names and SASL data).
pub const MAX_LINE: usize = 4096;
/// Most attributes in one request (Postfix 3.7 sends about 30).
pub const MAX_ATTRIBUTES: usize = 128;

/// One policy request: its attributes in the order they came.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRequest {
    pub attributes: Vec<(String, String)>,
}

impl PolicyRequest {
    /// The value of attribute `name` (the first, if it came twice).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What breaks a policy conversation.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("malformed policy request: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The codec: decodes [`PolicyRequest`]s, encodes an action as its reply.
#[derive(Debug, Default)]
pub struct PolicyCodec {
    pending: PolicyRequest,
}

impl Decoder for PolicyCodec {
    type Item = PolicyRequest;
    type Error = PolicyError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<PolicyRequest>, PolicyError> {
        let malformed = |why: String| Err(PolicyError::Malformed(why));
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let raw = buf.split_to(end + 1);
            if end > MAX_LINE {
                return malformed(format!("a line of {end} bytes (at most {MAX_LINE})"));
            }
            let Ok(line) = std::str::from_utf8(&raw[..end]) else {
                return malformed("a line that is not UTF-8".into());
            };
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                if self.pending.attributes.is_empty() {
                    return malformed("an empty request".into());
                }
                return Ok(Some(std::mem::take(&mut self.pending)));
            }
            let Some((name, value)) = line.split_once('=') else {
                return malformed(format!("{:?} is not name=value", truncate(line)));
            };
            if name.is_empty() {
                return malformed(format!("{:?} has no name", truncate(line)));
            }
            if self.pending.attributes.len() == MAX_ATTRIBUTES {
                return malformed(format!("more than {MAX_ATTRIBUTES} attributes"));
            }
            self.pending
                .attributes
                .push((name.to_owned(), value.to_owned()));
        }
        if buf.len() > MAX_LINE {
            return malformed(format!("a line of over {MAX_LINE} bytes"));
        }
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<PolicyRequest>, PolicyError> {
        match self.decode(buf)? {
            Some(r) => Ok(Some(r)),
            None if buf.is_empty() && self.pending.attributes.is_empty() => Ok(None),
            None => Err(PolicyError::Malformed(
                "the connection closed in the middle of a request".into(),
            )),
        }
    }
}

impl Encoder<&str> for PolicyCodec {
    type Error = PolicyError;

    /// `action=<action>` and the empty line; the action must be one line.
    fn encode(&mut self, action: &str, buf: &mut BytesMut) -> Result<(), PolicyError> {
        debug_assert!(!action.contains(['\n', '\r']));
        buf.reserve(action.len() + 9);
        buf.put_slice(b"action=");
        buf.put_slice(action.as_bytes());
        buf.put_slice(b"\n\n");
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> (Vec<PolicyRequest>, Option<String>) {
        let mut codec = PolicyCodec::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Byte by byte: a request split anywhere decodes the same.
        for b in input {
            buf.put_u8(*b);
            match codec.decode(&mut buf) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        match codec.decode_eof(&mut buf) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => return (out, Some(e.to_string())),
        }
        (out, None)
    }

    #[test]
    fn requests_on_a_reused_connection() {
        let (reqs, err) = decode_all(
            b"request=smtpd_access_policy\nprotocol_state=CONNECT\nclient_address=192.0.2.20\nclient_name=unknown\n\nrequest=smtpd_access_policy\r\nclient_address=2001:db8::1\r\nsasl_method=\r\n\r\n",
        );
        assert_eq!(err, None);
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].get("client_address"), Some("192.0.2.20"));
        assert_eq!(reqs[0].get("protocol_state"), Some("CONNECT"));
        assert_eq!(reqs[1].get("client_address"), Some("2001:db8::1"));
        assert_eq!(reqs[1].get("sasl_method"), Some(""));
        assert_eq!(reqs[1].get("missing"), None);
    }

    #[test]
    fn malformed_requests_are_errors() {
        for (input, why) in [
            (
                &b"request=smtpd_access_policy\nGARBAGE\n\n"[..],
                "not name=value",
            ),
            (b"\n", "empty request"),
            (b"=x\n\n", "no name"),
            (b"client_address=192.0.2.1\n", "closed in the middle"),
            (b"a=\xff\n\n", "not UTF-8"),
        ] {
            let (reqs, err) = decode_all(input);
            assert!(reqs.is_empty());
            let err = err.unwrap_or_default();
            assert!(
                err.starts_with("malformed policy request") && err.contains(why),
                "{input:?}: {err}"
            );
        }
        let long = vec![b'a'; MAX_LINE + 2];
        assert!(decode_all(&long).1.unwrap().contains("over 4096 bytes"));
        let many: Vec<u8> = (0..=MAX_ATTRIBUTES)
            .flat_map(|i| format!("a{i}=b\n").into_bytes())
            .collect();
        assert!(decode_all(&many).1.unwrap().contains("more than 128"));
        assert_eq!(decode_all(b"").1, None);
    }

    #[test]
    fn replies_are_an_action_and_an_empty_line() {
        let mut buf = BytesMut::new();
        PolicyCodec::default()
            .encode("554 5.7.1 refused", &mut buf)
            .unwrap();
        PolicyCodec::default().encode("DUNNO", &mut buf).unwrap();
        assert_eq!(&buf[..], b"action=554 5.7.1 refused\n\naction=DUNNO\n\n");
    }
}
