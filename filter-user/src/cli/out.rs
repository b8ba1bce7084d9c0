//! The CLI's standard output. A reader that goes away (`mxscreen list | head -1`,
//! `stats --watch | head`) must end the command quietly, not with a panic: every write goes
//! through [`outln!`]/[`out!`], which return the io error, and `main` treats a broken pipe as
//! a normal end.

/// `println!` that returns the write error (use with `?`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` that returns the write error (use with `?`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

pub(crate) use out;
pub(crate) use outln;

/// Whether an error is stdout's reader having gone away.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
