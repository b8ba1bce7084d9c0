//! `mxscreen config check` / `mxscreen config default` / `mxscreen config import`.

use std::path::PathBuf;

use anyhow::Result;

use super::out::{out, outln};
use crate::config::{
    Config, DEFAULT_CONFIG_PATH, default_toml,
    import::{self, Source},
};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Parse and validate a config file (default: /etc/mxscreen/mxscreen.toml); errors name
    /// the file, line and key. Known traps (a public resolver, screened submission ports,
    /// blocklists without an allowlist, lists.allow_defaults = false) are printed as
    /// warnings on stderr; they do not fail the check.
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
    /// Translate postscreen's DNSBL policy (Postfix main.cf) or Exim's ACL dnslists into
    /// mxscreen config, printed on stdout: zones, reply filters and weights, thresholds,
    /// verdict lives, access lists. Every value is commented with the line it comes from;
    /// what cannot be expressed is listed at the top, each with its line and why.
    ///
    /// Several files are read in order, later settings winning (main.cf and mailcow's
    /// dns_blocklists.cf; Exim's macro file and its config).
    ///
    /// Examples:
    ///   mxscreen config import postscreen /etc/postfix/main.cf > mxscreen.toml
    ///   mxscreen config import exim /etc/exim4/exim4.conf.template
    ///   mxscreen config check mxscreen.toml
    #[command(verbatim_doc_comment)]
    Import {
        /// `postscreen` (Postfix main.cf) or `exim` (an Exim configuration).
        #[arg(value_enum)]
        source: Source,
        /// The config file(s).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn main(c: Command) -> Result<()> {
    match c {
        Command::Check { file } => {
            let path = file.unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
            let cfg = Config::load(&path)?;
            let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            for w in cfg.warnings(&resolv) {
                eprintln!("mxscreen: warning: {w}");
            }
            outln!("{}: ok", path.display())?;
        }
        Command::Default => out!("{}", default_toml())?,
        Command::Import { source, files } => {
            let imported = import::import(source, &files)?;
            out!("{}", imported.toml)?;
            if imported.notes > 0 {
                eprintln!(
                    "mxscreen: {} line(s) not translated, or translated with a difference: see the comments at the top",
                    imported.notes
                );
            }
        }
    }
    Ok(())
}
