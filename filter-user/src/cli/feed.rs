//! `mxscreen feed reload`.

use anyhow::Result;

use super::{connect::Connect, out::outln};

#[derive(clap::Subcommand)]
pub enum Command {
    Reload(ReloadArgs),
}

/// Read a feed's file now and load it; prints how it went once it is loaded.
///
/// A read that has no entries, or that lost more than the feed's max_shrink share of the
/// last good load at once (an emptied file, an error page, a truncated download), keeps the
/// last good load: `status` says why. --force loads it anyway, once. The command fails (exit
/// 1) when the file was not loaded.
///
/// Examples:
///   mxscreen feed reload spamhaus-drop
///   mxscreen feed reload edrop --force
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ReloadArgs {
    /// The feed's name (`name` of its [[lists.feed]] table).
    name: String,
    /// Load the file even if it would empty the feed or shrink it beyond max_shrink.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    connect: Connect,
}

pub fn main(c: Command) -> Result<()> {
    match c {
        Command::Reload(a) => {
            let message = a.connect.call(|c| c.feed_reload(a.name, a.force))?;
            outln!("{message}")?;
        }
    }
    Ok(())
}
