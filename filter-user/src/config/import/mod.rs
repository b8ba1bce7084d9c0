//! `mxscreen config import postscreen|exim FILE...`: an MTA's DNSBL policy as an mxscreen
//! config, every value commented with the line it comes from, and what cannot be expressed
//! named (line and why) in the header. The output passes `mxscreen config check`, and asks
//! the same DNS questions and weighs their answers as the source did (the notes and the
//! header's "how mxscreen differs" say where that cannot hold).
//!
//! - [`postscreen`] (with [`maincf`], Postfix's main.cf syntax, [`mastercf`], the overrides
//!   of postscreen's service, and [`access`], the access list) and [`acl`] (with [`exim`], Exim's config syntax, [`dnslists`], and
//!   [`hostlist`], the hosts a statement exempts) read a source into a [`draft::Draft`];
//! - [`codes`]: answer-code sets, postscreen's filters and Exim's codes and bitmasks alike;
//! - [`zones`]: what a source says per zone as `[[dnsbl]]` tables.

mod access;
mod acl;
mod codes;
mod dnslists;
mod draft;
mod exim;
mod hostlist;
mod maincf;
mod mastercf;
mod postscreen;
mod zones;

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use super::Config;

/// Which MTA's config is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// Postfix main.cf (or files of its settings, such as mailcow's dns_blocklists.cf).
    Postscreen,
    /// An Exim configuration (and the macro files it needs), its ACLs' dnslists.
    Exim,
}

/// An imported config: the TOML, and how many lines it names as not translated.
pub struct Imported {
    pub toml: String,
    pub notes: usize,
}

/// Reads `files` (in order; later settings override earlier ones) and translates them.
pub fn import(source: Source, files: &[PathBuf]) -> Result<Imported> {
    let mut texts = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        texts.push((f.display().to_string(), text));
    }
    let draft = match source {
        Source::Postscreen => postscreen::import(&texts),
        Source::Exim => acl::import(&texts),
    };
    let toml = draft.render();
    // The promise is a config `mxscreen config check` accepts: hold the translation to it.
    if let Err(e) = Config::from_toml_str(&toml, "the imported config") {
        bail!(
            "the translation is not a valid mxscreen config ({e:#}); please report this with the input:\n{toml}"
        );
    }
    Ok(Imported {
        toml,
        notes: draft.notes.len(),
    })
}
