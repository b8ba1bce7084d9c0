//! Whole-map reads, bulk writes and bulk deletes with the kernel's batch commands
//! (BPF_MAP_LOOKUP_BATCH / _UPDATE_BATCH / _DELETE_BATCH, Linux 5.6+). aya 0.14 only iterates key by
//! key — two syscalls per entry, slow for a million verdicts — while a batch
//! call moves thousands of entries at once. Callers fall back to the iterator on kernels
//! that lack the commands ([`Unsupported`]).

use std::{
    io,
    mem::size_of,
    ops::Range,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Linux's ENOTSUPP (524), which BPF returns for unsupported map operations; libc lacks it.
const ENOTSUPP: i32 = 524;
/// Entries per call: large enough to amortise the syscall, small enough to stay in cache.
const CHUNK: usize = 4096;

/// The kernel has no batch support for this map (callers iterate instead).
#[derive(Debug)]
pub struct Unsupported;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: attr is a valid bpf_attr prefix for the batch commands; every pointer in it
    // points into live buffers of the advertised sizes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(ENOTSUPP)
    )
}

/// Every (key, value) of a (non-per-CPU) hash map.
pub fn lookup_all<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
) -> Result<io::Result<Vec<(K, V)>>, Unsupported> {
    let mut out = Vec::new();
    lookup_chunks(fd, |chunk| {
        out.extend(chunk);
        true
    })
    .map(|r| r.map(|()| out))
}

/// Every (key, value) of a (non-per-CPU) hash map, handed to `each` a chunk (up to a few
/// thousand entries) at a time, so a reader of a million entries holds one chunk, not all.
/// `each` returns whether to go on.
pub fn lookup_chunks<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    mut each: impl FnMut(Vec<(K, V)>) -> bool,
) -> Result<io::Result<()>, Unsupported> {
    let mut keys = vec![0u8; CHUNK * size_of::<K>()];
    let mut values = vec![0u8; CHUNK * size_of::<V>()];
    // The resume token is opaque (a bucket index for hash maps); give it room for any key.
    let mut token_in = [0u8; 64];
    let mut token_out = [0u8; 64];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token_in.as_ptr() as u64 },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let done = match &r {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) if first && unsupported(e) => return Err(Unsupported),
            Err(_) => return Ok(Err(r.unwrap_err())),
        };
        let chunk = (0..attr.count as usize)
            .map(|i| {
                // SAFETY: the kernel wrote `count` keys and values of these sizes; K and V
                // are plain old data, valid for any bytes.
                unsafe {
                    (
                        std::ptr::read_unaligned(keys.as_ptr().add(i * size_of::<K>()).cast::<K>()),
                        std::ptr::read_unaligned(
                            values.as_ptr().add(i * size_of::<V>()).cast::<V>(),
                        ),
                    )
                }
            })
            .collect::<Vec<_>>();
        if !chunk.is_empty() && !each(chunk) {
            return Ok(Ok(()));
        }
        if done {
            return Ok(Ok(()));
        }
        token_in = token_out;
        first = false;
    }
}

/// Deletes `keys` (a missing key is skipped, not an error); returns how many were deleted.
/// A large delete goes from two threads, as a large write does ([`update`]).
pub fn delete<K: Pod + Sync>(
    fd: BorrowedFd<'_>,
    keys: &[K],
) -> Result<io::Result<usize>, Unsupported> {
    halves(keys.len(), |r| delete_chunks(fd, &keys[r]))
}

fn delete_chunks<K: Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> Result<io::Result<usize>, Unsupported> {
    let mut deleted = 0;
    for chunk in keys.chunks(CHUNK) {
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        match bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
            Ok(()) => deleted += attr.count as usize,
            Err(e) if deleted == 0 && unsupported(&e) => return Err(Unsupported),
            // ENOENT: some key was already gone (evicted, or the datapath replaced it); the
            // call stops there, so delete the rest of this chunk one by one via a new call.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                deleted += attr.count as usize;
                let rest = &chunk[(attr.count as usize + 1).min(chunk.len())..];
                if !rest.is_empty() {
                    match delete_chunks(fd, rest) {
                        Ok(Ok(n)) => deleted += n,
                        other => return other,
                    }
                }
            }
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(deleted))
}

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Writes and deletes of at least this many entries go from two threads.
const TWO_WRITERS_FROM: usize = 65_536;

/// Writes `keys[i] = values[i]` (insert or replace) in chunks; returns how many were written.
/// A large write goes from two threads, half each ([`halves`]).
pub fn update<K: Pod + Sync, V: Pod + Sync>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<io::Result<usize>, Unsupported> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    halves(keys.len(), |r| {
        update_chunks(fd, &keys[r.clone()], &values[r])
    })
}

/// Runs `op` over the items `0..len`: at once, or for a large batch over each half from a
/// thread of its own. A hash map locks per bucket, so the kernel's inserts and deletes (most
/// of a million-entry feed's load, replacement or removal) run side by side. Either half
/// unsupported: the caller goes one by one (a rewrite or a second delete is harmless).
fn halves(
    len: usize,
    op: impl Fn(Range<usize>) -> Result<io::Result<usize>, Unsupported> + Sync,
) -> Result<io::Result<usize>, Unsupported> {
    if len < TWO_WRITERS_FROM {
        return op(0..len);
    }
    let mid = len / 2;
    std::thread::scope(|s| {
        let second = s.spawn(|| op(mid..len));
        let first = op(0..mid);
        match (first, second.join().expect("batch writer panicked")) {
            (Ok(a), Ok(b)) => Ok(a.and_then(|a| Ok(a + b?))),
            _ => Err(Unsupported),
        }
    })
}

fn update_chunks<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<io::Result<usize>, Unsupported> {
    let mut written = 0;
    for (ks, vs) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
        let mut attr = BatchAttr {
            keys: ks.as_ptr() as u64,
            values: vs.as_ptr() as u64,
            count: ks.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        match bpf(BPF_MAP_UPDATE_BATCH, &mut attr) {
            Ok(()) => written += attr.count as usize,
            Err(e) if written == 0 && unsupported(&e) => return Err(Unsupported),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(written))
}
