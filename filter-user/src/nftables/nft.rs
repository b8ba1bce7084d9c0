//! Running the `nft` program in the table's network namespace: the ruleset is written as one
//! `nft -f -` transaction (when the config or the prefix lengths change, never per SYN or
//! per verdict). Elements and counters go over netlink ([`super::netlink`]).

use std::{
    io::Write as _,
    os::fd::{AsRawFd as _, OwnedFd},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Runs `nft -f -` with `script` in the network namespace `netns`: one transaction.
pub fn apply(netns: &OwnedFd, script: &str) -> Result<()> {
    nft(netns, &["-f", "-"], Some(script)).map(drop)
}

/// Runs `nft ARGS` in `netns` and returns its standard output (for reading counters).
pub fn query(netns: &OwnedFd, args: &[&str]) -> Result<String> {
    nft(netns, args, None)
}

fn nft(netns: &OwnedFd, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let nft = which::which("nft")
        .context("the nftables backend needs the nft program (Debian: apt install nftables)")?;
    let ns = netns.as_raw_fd();
    let mut cmd = Command::new(nft);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A thread in another namespace (a test's, for a moment) puts the child in the table's.
    // Only then: setns needs CAP_SYS_ADMIN, which a container (Docker with NET_ADMIN added)
    // may not give, though the daemon there is in the table's namespace all along.
    if !super::netns::in_namespace(netns) {
        // SAFETY: setns is async-signal-safe; it puts the child in the table's namespace.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::setns(ns, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = cmd.spawn().context("starting nft")?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .context("writing to nft")?;
    }
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        // The status too: an nft killed by a signal says nothing on stderr.
        bail!(
            "nft {} ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
