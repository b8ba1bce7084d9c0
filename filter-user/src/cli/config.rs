//! `mxscreen config check` / `mxscreen config default`.

use std::path::PathBuf;

use anyhow::Result;

use super::out::{out, outln};
use crate::config::{Config, DEFAULT_CONFIG_PATH, default_toml};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Parse and validate a config file (default: /etc/mxscreen/mxscreen.toml); errors name
    /// the file, line and key.
    ///
    /// Example:
    ///   mxscreen config check /etc/mxscreen/mxscreen.toml
    #[command(verbatim_doc_comment)]
    Check { file: Option<PathBuf> },
    /// Print the complete default config, every key commented: a starting point for
    /// /etc/mxscreen/mxscreen.toml.
    ///
    /// Example:
    ///   mxscreen config default > /etc/mxscreen/mxscreen.toml
    #[command(verbatim_doc_comment)]
    Default,
}

pub fn main(c: Command) -> Result<()> {
    match c {
        Command::Check { file } => {
            let path = file.unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
            Config::load(&path)?;
            outln!("{}: ok", path.display())?;
        }
        Command::Default => out!("{}", default_toml())?,
    }
    Ok(())
}
