//! Reading a feed file safely, whatever a downloader left at its path: only a regular file is
//! ever opened (a FIFO would block `open()` until someone writes to it), and a line is kept
//! in memory only up to [`MAX_LINE`] bytes — the rest of an endless "line" (a binary or a
//! compressed file saved as the list) is skipped as it streams past, never stored.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::Path,
};

/// The longest line a feed may have. Real lines are an address and a comment (FireHOL's and
/// Spamhaus' header lines are under 200 bytes); a longer one is refused unread.
pub const MAX_LINE: usize = 4096;
/// How much of an offending text a log line or `status` quotes.
const EXCERPT: usize = 64;

/// Opens `path` for reading if it is a regular file (symbolic links followed), and never
/// blocks: the type is checked first, the open is non-blocking, and the opened file is
/// checked again (the path may have been replaced in between).
pub fn open_regular(path: &Path) -> io::Result<File> {
    not_regular(&std::fs::metadata(path)?)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    not_regular(&file.metadata()?)?;
    Ok(file)
}

/// An error naming what the file is, if it is not a regular file.
fn not_regular(meta: &std::fs::Metadata) -> io::Result<()> {
    let t = meta.file_type();
    let what = if t.is_file() {
        return Ok(());
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    };
    Err(io::Error::other(format!(
        "not a regular file ({what}); it is not read"
    )))
}

/// One line as [`next_line`] read it.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line, without its end (`\n` or `\r\n`), in the caller's buffer.
    Text,
    /// A line of this many bytes, over [`MAX_LINE`]: skipped, not stored.
    TooLong(u64),
}

/// Reads the next line into `buf` (cleared first); `None` at the end of the file. Whatever
/// the line's length, at most [`MAX_LINE`] + 2 bytes of it are kept.
pub fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Option<Line>> {
    buf.clear();
    let mut total = 0u64;
    let mut newline = false;
    let mut any = false;
    while !newline {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        any = true;
        let take = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => {
                newline = true;
                i + 1
            }
            None => chunk.len(),
        };
        let room = (MAX_LINE + 2).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        total += take as u64;
        reader.consume(take);
    }
    if !any {
        return Ok(None);
    }
    // The line's length without its end; its end is removed if the whole line was kept.
    let mut len = total - u64::from(newline);
    if buf.len() as u64 == total {
        buf.truncate(len as usize);
        if buf.last() == Some(&b'\r') {
            buf.pop();
            len -= 1;
        }
    }
    Ok(Some(if len > MAX_LINE as u64 {
        buf.clear();
        Line::TooLong(len)
    } else {
        Line::Text
    }))
}

/// `s` quoted for a log line: at most [`EXCERPT`] characters, control characters escaped,
/// `…` where it was cut.
pub fn quoted(s: &str) -> String {
    let mut cut: String = s.chars().take(EXCERPT).collect();
    if s.chars().nth(EXCERPT).is_some() {
        cut.push('…');
    }
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<(Line, Vec<u8>)> {
        let mut r = io::BufReader::with_capacity(16, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(l) = next_line(&mut r, &mut buf).unwrap() {
            out.push((l, buf.clone()));
        }
        out
    }

    #[test]
    fn lines_end_at_newlines_with_or_without_a_last_one() {
        assert_eq!(
            lines(b"a\r\nbb\n\nccc"),
            vec![
                (Line::Text, b"a".to_vec()),
                (Line::Text, b"bb".to_vec()),
                (Line::Text, b"".to_vec()),
                (Line::Text, b"ccc".to_vec()),
            ]
        );
        assert!(lines(b"").is_empty());
    }

    #[test]
    fn an_endless_line_is_measured_not_kept() {
        let mut input = vec![b'7'; MAX_LINE];
        input.extend(b"\r\n");
        input.extend(vec![b'x'; 3 * MAX_LINE + 5]);
        input.extend(b"\n192.0.2.1");
        let got = lines(&input);
        assert_eq!(got[0], (Line::Text, vec![b'7'; MAX_LINE]));
        assert_eq!(got[1], (Line::TooLong(3 * MAX_LINE as u64 + 5), Vec::new()));
        assert_eq!(got[2], (Line::Text, b"192.0.2.1".to_vec()));
    }

    #[test]
    fn quotes_are_short() {
        assert_eq!(quoted("bogus"), "\"bogus\"");
        let long = "a".repeat(1000);
        assert_eq!(quoted(&long).chars().count(), EXCERPT + 3);
        assert_eq!(quoted("a\u{1b}[31m"), "\"a\\u{1b}[31m\"");
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = open_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file (a FIFO)"), "{e}");
        let e = open_regular(dir.path()).unwrap_err();
        assert!(e.to_string().contains("(a directory)"), "{e}");
        let file = dir.path().join("feed.txt");
        std::fs::write(&file, "192.0.2.1\n").unwrap();
        assert!(open_regular(&file).is_ok());
        let e = open_regular(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
