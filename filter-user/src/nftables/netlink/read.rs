//! Reading the table back over netlink: set elements (with their per-element counters) and
//! the named counters, as dumps (or one element as a get). Raw attribute walks where the
//! crate decodes no `counter` expression or object.

use std::{collections::HashMap, io};

use anyhow::{Context as _, Result};
use netlink_packet_core::{
    DefaultNla, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_DUMP, NetlinkMessage, NlaBuffer,
};
use netlink_packet_netfilter::{
    NetfilterMessage,
    nftables::{ListAttribute, NfTablesMessage, SetElementList, SetElementMessage},
};

use super::{
    COUNTER_BYTES, COUNTER_PACKETS, Dumped, Elem, NLMSG_DONE, NLMSG_ERROR, Netlink, Tally,
    error_code, getsockopt_int, nft_message, replies,
};

impl Netlink {
    /// Every element of set `set` (a dump), decoded raw: the crate's decoder formats the
    /// whole remaining message for every element of a list (an error context it builds
    /// whether or not it fails), which made a dump of 65,536 verdicts take 35 s.
    pub fn dump(&mut self, set: &str) -> Result<Vec<Dumped>> {
        let m = nft_message(
            NfTablesMessage::GetSetElement(SetElementMessage {
                attributes: vec![
                    SetElementList::Table(self.table.clone()),
                    SetElementList::Set(set.to_owned()),
                ],
            }),
            NLM_F_DUMP | NLM_F_ACK,
        );
        let mut out = Vec::new();
        self.dump_raw(m, &mut |msg| {
            out.extend(elements(msg).filter_map(|(d, _)| d));
            Ok(())
        })
        .with_context(|| format!("reading set {set}"))?;
        Ok(out)
    }

    /// The packets each element of `set` counted (its per-element `counter`), by key: a
    /// dump read raw, since the crate decodes no `counter` expression. Only for small sets:
    /// the kernel walks the set from its start again for every message a dump fills, so a
    /// dump costs the square of the set's size (a million elements: about 50 s).
    pub fn element_packets(&mut self, set: &str) -> Result<Vec<(Vec<u8>, u64)>> {
        let mut out = Vec::new();
        self.element_counts(set, None, &mut out)
            .with_context(|| format!("reading the counters of set {set}"))?;
        Ok(out)
    }

    /// The packets the elements `keys` of `set` counted, by key, whatever the set's size:
    /// gets of many elements a request, as many as their answers fit the receive buffer
    /// (the kernel drops what does not fit). A key the set does not hold (expired since) is
    /// left out: the kernel stops a request at the first such key, and the rest are asked
    /// again.
    pub fn elements_packets(
        &mut self,
        set: &str,
        keys: &[Vec<u8>],
    ) -> Result<HashMap<Vec<u8>, u64>> {
        let per_request = self.gets_per_request();
        let mut out = Vec::with_capacity(keys.len());
        let mut rest = keys;
        while !rest.is_empty() {
            let batch = &rest[..rest.len().min(per_request)];
            let before = out.len();
            match self.element_counts(set, Some(batch), &mut out) {
                Ok(()) => rest = &rest[batch.len()..],
                // One answer per element found, in order: the missing one is next.
                Err(e) if super::super::errno(&e) == Some(libc::ENOENT) => {
                    rest = &rest[(out.len() - before + 1).min(rest.len())..];
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("reading elements of set {set}"));
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// How many elements one get asks for: each answer is a message of its own, of up to a
    /// page (8 KiB with the kernel's overhead), and the receive buffer (forced to 8 MiB where
    /// the capability allows, 208 KiB by default in a container) must hold them all, with
    /// room to spare for the acknowledgement.
    fn gets_per_request(&self) -> usize {
        let rcvbuf = getsockopt_int(&self.sock, libc::SO_RCVBUF).unwrap_or(212_992);
        (rcvbuf / (16 * 1024)).clamp(4, 1024)
    }

    /// How long the element `key` of `set` has left, in milliseconds: `None` if the set does
    /// not hold it (or no longer: it expired), `Some(None)` if it never expires. One get.
    pub fn element_expiry(&mut self, set: &str, key: &[u8]) -> Result<Option<Option<u64>>> {
        let mut out = Vec::new();
        match self.element_gets(set, Some(&[key.to_vec()]), &mut |d, _| out.push(d)) {
            Ok(()) => Ok(out.pop().map(|d| d.expires_ms)),
            Err(e) if super::super::errno(&e) == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading an element of set {set}")),
        }
    }

    /// A dump of `set`'s elements, or (with `keys`) a get of those, as (key, packets) into
    /// `out`: on an error, what was read before it is there.
    fn element_counts(
        &mut self,
        set: &str,
        keys: Option<&[Vec<u8>]>,
        out: &mut Vec<(Vec<u8>, u64)>,
    ) -> Result<()> {
        self.element_gets(set, keys, &mut |d, packets| out.push((d.key, packets)))
    }

    /// A dump of `set`'s elements, or (with `keys`) a get of those, each element read (and
    /// the packets its counters counted) handed to `each`.
    fn element_gets(
        &mut self,
        set: &str,
        keys: Option<&[Vec<u8>]>,
        each: &mut dyn FnMut(Dumped, u64),
    ) -> Result<()> {
        let mut attributes = vec![
            SetElementList::Table(self.table.clone()),
            SetElementList::Set(set.to_owned()),
        ];
        if let Some(keys) = keys {
            attributes.push(SetElementList::Elements(
                keys.iter()
                    .map(|k| ListAttribute::Element(Elem::key(k.clone()).attributes(false)))
                    .collect(),
            ));
        }
        let flags = if keys.is_some() {
            NLM_F_ACK
        } else {
            NLM_F_DUMP
        };
        let m = nft_message(
            NfTablesMessage::GetSetElement(SetElementMessage { attributes }),
            flags,
        );
        self.dump_raw(m, &mut |msg| {
            for (d, packets) in elements(msg) {
                if let Some(d) = d {
                    each(d, packets);
                }
            }
            Ok(())
        })
    }

    /// Every named counter of the table: name → what it counted (one dump, however many
    /// elements the table's sets hold; `nft list counters` reads every set's elements first).
    pub fn named_counters(&mut self) -> Result<Vec<(String, Tally)>> {
        let mut table = self.table.clone().into_bytes();
        table.push(0);
        let m = nft_message(
            NfTablesMessage::Other {
                message_type: MSG_GETOBJ,
                attributes: vec![
                    DefaultNla::new(OBJ_TABLE, table),
                    DefaultNla::new(OBJ_TYPE, OBJECT_COUNTER.to_be_bytes().to_vec()),
                ],
            },
            NLM_F_DUMP,
        );
        let mut out = Vec::new();
        self.dump_raw(m, &mut |msg| {
            let (mut name, mut tally) = (None, Tally::default());
            for (kind, v) in attrs(nfgen_payload(msg)) {
                match kind {
                    OBJ_NAME => name = Some(c_string(v)),
                    OBJ_DATA => {
                        tally = Tally {
                            packets: be_u64(attrs(v).find(|a| a.0 == COUNTER_PACKETS)),
                            bytes: be_u64(attrs(v).find(|a| a.0 == COUNTER_BYTES)),
                        }
                    }
                    _ => {}
                }
            }
            out.extend(name.map(|n| (n, tally)));
            Ok(())
        })
        .context("reading the table's counters")?;
        Ok(out)
    }

    /// Sends the request `m` and hands each reply message (whole, header included) to
    /// `each`, until a dump is done (`NLMSG_DONE`) or a plain get is acked.
    fn dump_raw(
        &mut self,
        mut m: NetlinkMessage<NetfilterMessage>,
        each: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        m.header.sequence_number = self.seq;
        self.seq = self.seq.wrapping_add(1);
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        self.sock.send(&buf, 0).context("sending a dump request")?;
        let mut rbuf = vec![0u8; 256 * 1024];
        loop {
            let n = self
                .sock
                .recv(&mut &mut rbuf[..], 0)
                .context("reading a dump")?;
            for (kind, msg) in replies(&rbuf[..n]) {
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = error_code(msg);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code).into());
                        }
                        return Ok(());
                    }
                    _ => each(msg)?,
                }
            }
        }
    }
}

/// `NFT_MSG_GETOBJ` and the object attributes read back (`NFTA_OBJ_*`), and the counter
/// object's type.
const MSG_GETOBJ: u8 = 19;
const OBJ_TABLE: u16 = 1;
const OBJ_NAME: u16 = 2;
const OBJ_TYPE: u16 = 3;
const OBJ_DATA: u16 = 4;
const OBJECT_COUNTER: u32 = 1;
/// `NFTA_SET_ELEM_LIST_ELEMENTS`, the element attributes read back (`NFTA_SET_ELEM_*`),
/// `NFTA_DATA_*`, `NFTA_VERDICT_CHAIN`, `NFTA_EXPR_NAME`, `NFTA_EXPR_DATA`.
const SETELEM_LIST_ELEMENTS: u16 = 3;
const SET_ELEM_KEY: u16 = 1;
const SET_ELEM_DATA: u16 = 2;
const SET_ELEM_EXPIRATION: u16 = 5;
const SET_ELEM_USERDATA: u16 = 6;
const SET_ELEM_EXPR: u16 = 7;
const SET_ELEM_EXPRESSIONS: u16 = 11;
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;
const VERDICT_CHAIN: u16 = 2;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;

/// The attributes of a netfilter message, past its netlink and nfgenmsg headers.
fn nfgen_payload(msg: &[u8]) -> &[u8] {
    msg.get(16 + 4..).unwrap_or_default()
}

/// The attributes in `buf`: (type without the nested/byte-order flags, value). A malformed
/// attribute ends the walk.
pub(super) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let nla = NlaBuffer::new_checked(buf).ok()?;
        let len = usize::from(nla.length());
        let (kind, value) = (nla.kind() & NLA_TYPE_MASK, buf.get(4..len)?);
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, value))
    })
}

/// The packets of an expression, if it is a `counter` (else 0).
fn counter_packets(expr: &[u8]) -> u64 {
    let mut is_counter = false;
    let mut packets = 0;
    for (kind, v) in attrs(expr) {
        match kind {
            EXPR_NAME => is_counter = c_string(v) == "counter",
            EXPR_DATA => packets = be_u64(attrs(v).find(|a| a.0 == COUNTER_PACKETS)),
            _ => {}
        }
    }
    if is_counter { packets } else { 0 }
}

fn be_u64(attr: Option<(u16, &[u8])>) -> u64 {
    attr.and_then(|(_, v)| v.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

pub(super) fn c_string(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// The elements of one reply message (a dump's or a get's), each with the packets its
/// `counter` expressions counted; `None` for an element without a key.
fn elements(msg: &[u8]) -> impl Iterator<Item = (Option<Dumped>, u64)> + '_ {
    attrs(nfgen_payload(msg))
        .filter(|a| a.0 == SETELEM_LIST_ELEMENTS)
        .flat_map(|(_, list)| attrs(list).map(|(_, elem)| element(elem)))
}

/// One element's attributes, decoded.
fn element(elem: &[u8]) -> (Option<Dumped>, u64) {
    let mut d = Dumped {
        key: Vec::new(),
        chain: None,
        expires_ms: None,
        userdata: Vec::new(),
    };
    let mut packets = 0;
    for (kind, v) in attrs(elem) {
        match kind {
            SET_ELEM_KEY => {
                if let Some((_, k)) = attrs(v).find(|a| a.0 == DATA_VALUE) {
                    d.key = k.to_vec();
                }
            }
            SET_ELEM_DATA => {
                d.chain = attrs(v)
                    .filter(|a| a.0 == DATA_VERDICT)
                    .flat_map(|(_, verdict)| attrs(verdict))
                    .find(|a| a.0 == VERDICT_CHAIN)
                    .map(|(_, c)| c_string(c));
            }
            SET_ELEM_EXPIRATION => d.expires_ms = v.try_into().ok().map(u64::from_be_bytes),
            SET_ELEM_USERDATA => d.userdata = v.to_vec(),
            SET_ELEM_EXPR => packets += counter_packets(v),
            SET_ELEM_EXPRESSIONS => {
                packets += attrs(v).map(|(_, e)| counter_packets(e)).sum::<u64>()
            }
            _ => {}
        }
    }
    ((!d.key.is_empty()).then_some(d), packets)
}
