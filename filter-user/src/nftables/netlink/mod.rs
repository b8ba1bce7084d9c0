//! Set elements over netlink: the writes the backend makes all the time (verdicts, list
//! entries, feeds, the liveness beat) go to the kernel as nf_tables transactions built in
//! process (`netlink-packet-netfilter`), never through the `nft` program, which parses text
//! and reads the ruleset back before every command (`cargo xtask bench nft-load` measures
//! both). A transaction is one `sendmsg`: batch begin, element messages, batch end, applied by
//! the kernel all or nothing; every message asks for an ack, and the first error fails it.

use std::{io, os::fd::AsRawFd as _};

use anyhow::{Context as _, Result, bail};
use netlink_packet_core::{
    DefaultNla, Emitable as _, NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkMessage, Nla,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterProtoFamily,
    nftables::{
        DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
        SetElementMessage, Verdict, VerdictAttribute,
    },
    none::ControlMessage,
};
use netlink_sys::{Socket, constants::NETLINK_NETFILTER};

mod read;

/// `NFNL_SUBSYS_NFTABLES`: the batch messages name the subsystem they wrap.
const SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_DESTROYSETELEM` (Linux 6.3): delete if present, no error if not.
const MSG_DESTROYSETELEM: u8 = 30;
/// `NLMSG_ERROR`: an ack (code 0) or an error.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// An element list attribute's length is 16 bits: messages stay well below that.
const MESSAGE_BYTES: usize = 48 * 1024;
/// Bytes of messages per transaction (one `sendmsg`, which must fit the send buffer).
const TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
/// The send and receive buffers asked for (forced where the capability allows).
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// One set element to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Elem {
    /// The key, in network byte order (an address, or a masked prefix's network).
    pub key: Vec<u8>,
    /// For a verdict map: the chain the element sends its packets to (`goto`).
    pub goto: Option<String>,
    /// Milliseconds until it expires; `None` = never (sets without a default timeout).
    pub timeout_ms: Option<u64>,
    /// Bytes kept with the element for whoever reads it back (a verdict's reason).
    pub userdata: Vec<u8>,
    /// Its own stateful expressions, evaluated when a lookup finds it (for a set that
    /// declares none of its own).
    pub stateful: Vec<Stateful>,
}

/// A stateful expression an element carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stateful {
    /// Counts the SYNs that found it.
    Counter,
    /// A token bucket of `per_minute` with `burst`, matching over its rate
    /// (`limit rate over N/minute burst B packets`): under it, the lookup does not match.
    LimitOver { per_minute: u64, burst: u32 },
}

/// `NFTA_SET_ELEM_EXPRESSIONS`, `NFTA_LIST_ELEM`, `NFTA_EXPR_NAME`/`DATA`, the counter's and
/// the limit's attributes, `NFT_LIMIT_PKTS` and `NFT_LIMIT_F_INV`.
const SET_ELEM_EXPR: u16 = 7;
const SET_ELEM_EXPRESSIONS: u16 = 11;
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const COUNTER_BYTES: u16 = 1;
const COUNTER_PACKETS: u16 = 2;
const LIMIT_RATE: u16 = 1;
const LIMIT_UNIT: u16 = 2;
const LIMIT_BURST: u16 = 3;
const LIMIT_TYPE: u16 = 4;
const LIMIT_FLAGS: u16 = 5;
const LIMIT_PKTS: u32 = 0;
const LIMIT_F_INV: u32 = 1;

/// One attribute, header and padding included (`nested` sets `NLA_F_NESTED`).
fn nla(kind: u16, nested: bool, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let kind = if nested { kind | NLA_F_NESTED } else { kind };
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(len.next_multiple_of(4), 0);
    out
}

impl Stateful {
    /// The expression as a list element of `NFTA_SET_ELEM_EXPRESSIONS`.
    fn encode(self) -> Vec<u8> {
        let (name, data): (&[u8], Vec<u8>) = match self {
            Stateful::Counter => (
                b"counter\0",
                [
                    nla(COUNTER_BYTES, false, &0u64.to_be_bytes()),
                    nla(COUNTER_PACKETS, false, &0u64.to_be_bytes()),
                ]
                .concat(),
            ),
            Stateful::LimitOver { per_minute, burst } => (
                b"limit\0",
                [
                    nla(LIMIT_RATE, false, &per_minute.to_be_bytes()),
                    nla(LIMIT_UNIT, false, &60u64.to_be_bytes()),
                    nla(LIMIT_BURST, false, &burst.to_be_bytes()),
                    nla(LIMIT_TYPE, false, &LIMIT_PKTS.to_be_bytes()),
                    nla(LIMIT_FLAGS, false, &LIMIT_F_INV.to_be_bytes()),
                ]
                .concat(),
            ),
        };
        let expr = [nla(EXPR_NAME, false, name), nla(EXPR_DATA, true, &data)].concat();
        nla(LIST_ELEM, true, &expr)
    }
}

impl Elem {
    pub fn key(key: Vec<u8>) -> Self {
        Self {
            key,
            goto: None,
            timeout_ms: None,
            userdata: Vec::new(),
            stateful: Vec::new(),
        }
    }

    /// Its attributes: all of them when `adding`, else its key (and data) only.
    fn attributes(&self, adding: bool) -> Vec<SetElementAttribute> {
        let mut a = vec![SetElementAttribute::Key(DataAttribute::Value(
            self.key.clone(),
        ))];
        if let Some(chain) = &self.goto {
            a.push(SetElementAttribute::Data(DataAttribute::Verdict(vec![
                VerdictAttribute::Code(Verdict::Goto),
                VerdictAttribute::Chain(chain.clone()),
            ])));
        }
        if adding && !self.userdata.is_empty() {
            a.push(SetElementAttribute::UserData(self.userdata.clone()));
        }
        if let (true, Some(ms)) = (adding, self.timeout_ms) {
            // Timeout and expiration together: an element that already exists gets its
            // timer restarted (Linux 6.10+; older kernels keep the first one).
            a.push(SetElementAttribute::Timeout(ms.max(1)));
            a.push(SetElementAttribute::Expiration(ms.max(1)));
        }
        if adding && self.stateful.len() == 1 {
            // One expression goes as NFTA_SET_ELEM_EXPR (what nft sends).
            let one = self.stateful[0].encode();
            a.push(SetElementAttribute::Other(DefaultNla::new(
                SET_ELEM_EXPR | NLA_F_NESTED,
                one[4..].to_vec(),
            )));
        } else if adding && !self.stateful.is_empty() {
            let list: Vec<u8> = self.stateful.iter().flat_map(|e| e.encode()).collect();
            a.push(SetElementAttribute::Other(DefaultNla::new(
                SET_ELEM_EXPRESSIONS | NLA_F_NESTED,
                list,
            )));
        }
        a
    }
}

/// What a transaction does to one set.
#[derive(Clone, Debug)]
pub enum Op {
    /// Adds elements (an existing one keeps its data; its timeout is restarted).
    Add(String, Vec<Elem>),
    /// Deletes elements; a missing one fails the transaction.
    Delete(String, Vec<Elem>),
    /// Deletes elements that exist, and ignores the others (Linux 6.3+).
    Destroy(String, Vec<Elem>),
    /// Empties the set.
    Flush(String),
}

/// An element read back from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dumped {
    pub key: Vec<u8>,
    /// The chain of a verdict map's element.
    pub chain: Option<String>,
    /// Milliseconds left before it expires (`None`: it never does).
    pub expires_ms: Option<u64>,
    /// What the writer stored with it.
    pub userdata: Vec<u8>,
}

/// What a named counter counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub packets: u64,
    pub bytes: u64,
}

/// A netlink socket to nf_tables in the network namespace it was opened in.
pub struct Netlink {
    sock: Socket,
    table: String,
    seq: u32,
}

fn nft_message(inner: NfTablesMessage, flags: u16) -> NetlinkMessage<NetfilterMessage> {
    let mut m = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::NetDev, 0, 0),
        inner,
    ));
    m.header.flags = NLM_F_REQUEST | flags;
    m
}

fn batch(which: ControlMessage) -> NetlinkMessage<NetfilterMessage> {
    let mut m = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, SUBSYS_NFTABLES),
        which,
    ));
    m.header.flags = NLM_F_REQUEST;
    m
}

/// An attribute re-emitted as raw bytes (for message types the crate does not name).
fn raw<N: Nla>(nla: &N) -> DefaultNla {
    let mut value = vec![0; nla.value_len()];
    nla.emit_value(&mut value);
    DefaultNla::new(nla.kind(), value)
}

impl Netlink {
    /// Opens the socket in the calling thread's network namespace, for table `table`.
    pub fn open(table: &str) -> Result<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER).context("opening a netfilter socket")?;
        sock.bind_auto().context("binding a netfilter socket")?;
        // Errors quote only the failed message's header, not its elements.
        sock.set_cap_ack(true).ok();
        sock.set_ext_ack(true).ok();
        for (force, plain) in [
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        ] {
            if setsockopt_int(&sock, force, SOCKET_BUFFER).is_err() {
                setsockopt_int(&sock, plain, SOCKET_BUFFER).ok();
            }
        }
        Ok(Self {
            sock,
            table: table.to_owned(),
            seq: 1,
        })
    }

    /// The largest transaction the send buffer takes (the kernel may give less than asked).
    fn transaction_bytes(&self) -> usize {
        let sndbuf = getsockopt_int(&self.sock, libc::SO_SNDBUF).unwrap_or(212_992);
        // The kernel doubles what it is asked for and keeps the rest for its bookkeeping.
        (sndbuf / 2).clamp(MESSAGE_BYTES * 2, TRANSACTION_BYTES)
    }

    /// The element messages of `ops`, each below [`MESSAGE_BYTES`].
    fn messages(&self, ops: &[Op]) -> Vec<NetlinkMessage<NetfilterMessage>> {
        let mut out = Vec::new();
        for op in ops {
            let (set, elems, flags, kind) = match op {
                Op::Add(s, e) => (s, e.as_slice(), NLM_F_CREATE | NLM_F_ACK, 0u8),
                Op::Delete(s, e) => (s, e.as_slice(), NLM_F_ACK, 1),
                Op::Destroy(s, e) => (s, e.as_slice(), NLM_F_ACK, 2),
                Op::Flush(s) => (s, &[][..], NLM_F_ACK, 1),
            };
            let mut chunks: Vec<Vec<ListAttribute<SetElementAttribute>>> = vec![Vec::new()];
            let mut bytes = 0;
            for e in elems {
                let attr = ListAttribute::Element(e.attributes(kind == 0));
                bytes += attr.buffer_len();
                if bytes > MESSAGE_BYTES {
                    chunks.push(Vec::new());
                    bytes = attr.buffer_len();
                }
                chunks.last_mut().expect("one chunk").push(attr);
            }
            for chunk in chunks {
                if chunk.is_empty() && !matches!(op, Op::Flush(_)) {
                    continue;
                }
                let mut attrs = vec![
                    SetElementList::Table(self.table.clone()),
                    SetElementList::Set(set.clone()),
                ];
                if !chunk.is_empty() {
                    attrs.push(SetElementList::Elements(chunk));
                }
                let msg = match kind {
                    0 => NfTablesMessage::NewSetElement(SetElementMessage { attributes: attrs }),
                    1 => NfTablesMessage::DeleteSetElement(SetElementMessage { attributes: attrs }),
                    _ => NfTablesMessage::Other {
                        message_type: MSG_DESTROYSETELEM,
                        attributes: attrs.iter().map(raw).collect(),
                    },
                };
                out.push(nft_message(msg, flags));
            }
        }
        out
    }

    /// Applies `ops` in as few transactions as the socket takes; each transaction is all or
    /// nothing, and the first that fails stops the rest (with the kernel's reason).
    pub fn apply(&mut self, ops: &[Op]) -> Result<()> {
        let limit = self.transaction_bytes();
        let mut pending = Vec::new();
        let mut bytes = 0;
        for m in self.messages(ops) {
            let len = m.buffer_len();
            if bytes + len > limit && !pending.is_empty() {
                self.transaction(std::mem::take(&mut pending))?;
                bytes = 0;
            }
            bytes += len;
            pending.push(m);
        }
        if !pending.is_empty() {
            self.transaction(pending)?;
        }
        Ok(())
    }

    fn transaction(&mut self, msgs: Vec<NetlinkMessage<NetfilterMessage>>) -> Result<()> {
        let mut all = Vec::with_capacity(msgs.len() + 2);
        all.push(batch(ControlMessage::BatchBegin));
        all.extend(msgs);
        // One ack, for the last message: the kernel reports every message that fails (and a
        // failed commit, on the batch's first message) before it, ack or not. An ack for each
        // message filled the receive buffer of a large transaction (a burst of verdicts is
        // five messages each; an ack costs ~1 KiB of buffer): the kernel then drops acks and
        // the socket reports ENOBUFS for a transaction that was committed.
        let n = all.len();
        for m in &mut all[1..n - 1] {
            m.header.flags &= !NLM_F_ACK;
        }
        all.push(batch(ControlMessage::BatchEnd));
        let first = self.seq;
        let mut buf = Vec::new();
        for m in &mut all {
            m.header.sequence_number = self.seq;
            self.seq = self.seq.wrapping_add(1);
            m.finalize();
            let at = buf.len();
            buf.resize(at + m.buffer_len(), 0);
            m.serialize(&mut buf[at..]);
        }
        let sent = self
            .sock
            .send(&buf, 0)
            .context("sending an nftables transaction")?;
        if sent != buf.len() {
            bail!(
                "nftables transaction sent in part ({sent} of {} bytes)",
                buf.len()
            );
        }
        let last = first.wrapping_add(all.len() as u32 - 1);
        self.ack(last)
    }

    /// Reads the transaction's one ack, or the first error before it.
    fn ack(&mut self, last_seq: u32) -> Result<()> {
        let mut acked = false;
        let mut buf = vec![0u8; 64 * 1024];
        while !acked {
            let n = self
                .sock
                .recv(&mut &mut buf[..], 0)
                .context("reading nftables acks")?;
            for (kind, msg) in replies(&buf[..n]) {
                if kind == NLMSG_ERROR {
                    let code = error_code(msg);
                    if code != 0 {
                        let err = io::Error::from_raw_os_error(-code);
                        let why = extack_message(msg);
                        // Drain what else the kernel sends for this transaction.
                        self.drain(last_seq);
                        return Err(err).context(match why {
                            Some(m) => format!("the kernel refused an nftables transaction: {m}"),
                            None => "the kernel refused an nftables transaction".to_owned(),
                        });
                    }
                    acked = true;
                }
            }
        }
        Ok(())
    }

    /// Discards replies up to `last_seq` after an error (non-blocking, best effort).
    fn drain(&mut self, _last_seq: u32) {
        let mut buf = vec![0u8; 64 * 1024];
        let _ = self.sock.set_non_blocking(true);
        while let Ok(n) = self.sock.recv(&mut &mut buf[..], 0) {
            if n == 0 {
                break;
            }
        }
        let _ = self.sock.set_non_blocking(false);
    }
}

/// The messages in what one `recv` read: (type, the whole message). A truncated one ends it.
fn replies(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let nl = NetlinkBuffer::new_checked(buf.get(off..)?).ok()?;
        let len = (nl.length() as usize).max(16);
        let msg = buf.get(off..off + len)?;
        off += len.next_multiple_of(4);
        Some((nl.message_type(), msg))
    })
}

/// The error code of an `NLMSG_ERROR` message (0: an ack).
fn error_code(msg: &[u8]) -> i32 {
    msg.get(16..20)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i32::from_ne_bytes)
}

/// The kernel's own words in an error (extended ack, `NLMSGERR_ATTR_MSG`), if it gave any:
/// the TLVs follow the error code and the refused message's header (acks are capped).
fn extack_message(msg: &[u8]) -> Option<String> {
    const NLM_F_ACK_TLVS: u16 = 0x200;
    const ATTR_MSG: u16 = 1;
    let flags = u16::from_ne_bytes(msg.get(6..8)?.try_into().ok()?);
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    read::attrs(msg.get(16 + 4 + 16..)?)
        .find(|a| a.0 == ATTR_MSG)
        .map(|(_, v)| read::c_string(v))
}

/// A socket option's integer value (`SOL_SOCKET`).
fn getsockopt_int(sock: &Socket, opt: libc::c_int) -> io::Result<usize> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a c_int of the given size.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&raw mut v).cast(),
            &raw mut len,
        )
    };
    if r == 0 {
        Ok(v.max(0) as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn setsockopt_int(sock: &Socket, opt: libc::c_int, value: usize) -> io::Result<()> {
    let v = value as libc::c_int;
    // SAFETY: setsockopt with a c_int value of the given size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
