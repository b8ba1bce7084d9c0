//! `mxscreen-assets OUT_DIR`: writes what the Debian package ships beside the binary, each
//! generated from the code so none can drift from it:
//!
//! - `man/*.8`: section-8 man pages for `mxscreen` and every subcommand (`mxscreen-block.8`,
//!   `mxscreen-config-check.8`, ...), from the clap definitions (clap_mangen);
//! - `completions/{mxscreen.bash,_mxscreen,mxscreen.fish}`, from the same (clap_complete);
//! - `mxscreen.toml`: the packaged config ([`mxscreen::config::packaged`]).
//!
//! `cargo xtask deb` runs it before cargo-deb. A program of its own rather than a hidden
//! `mxscreen` subcommand: the generators stay out of the installed binary and its `--help`,
//! and it links the very `mxscreen::cli::Cli` the binary parses with.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use clap::CommandFactory as _;
use clap_complete::Shell;
use mxscreen::cli::Cli;

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: mxscreen-assets OUT_DIR");
    };
    let out = PathBuf::from(out);
    let pages = man_pages(&out.join("man"))?;
    completions(&out.join("completions"))?;
    fs::write(
        out.join("mxscreen.toml"),
        mxscreen::config::packaged::packaged_toml(),
    )?;
    // stderr: `cargo xtask deb`'s stdout is the package's path alone.
    eprintln!(
        "wrote {} man pages, 3 completions and mxscreen.toml to {}",
        pages,
        out.display()
    );
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    // Start empty: a subcommand that went away must not leave its page behind.
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// One page per command, named as `man` looks it up: `mxscreen.8`, `mxscreen-block.8`.
fn man_pages(dir: &Path) -> Result<usize> {
    create_dir(dir)?;
    let mut root = Cli::command().disable_help_subcommand(true);
    // Building fills in the subcommands' display names (`mxscreen-block`).
    root.build();
    let mut written = 0;
    let mut todo = vec![root];
    while let Some(cmd) = todo.pop() {
        todo.extend(cmd.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
        let name = cmd
            .get_display_name()
            .unwrap_or_else(|| cmd.get_name())
            .to_owned();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .section("8")
            .render(&mut page)
            .with_context(|| format!("rendering the man page of {name}"))?;
        fs::write(dir.join(format!("{name}.8")), page)?;
        written += 1;
    }
    Ok(written)
}

/// The file names each shell's completion directory expects.
fn completions(dir: &Path) -> Result<()> {
    create_dir(dir)?;
    for (shell, file) in [
        (Shell::Bash, "mxscreen.bash"),
        (Shell::Zsh, "_mxscreen"),
        (Shell::Fish, "mxscreen.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "mxscreen", &mut text);
        fs::write(dir.join(file), text)?;
    }
    Ok(())
}
