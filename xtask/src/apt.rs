//! Debian packages: the two lists (what building and running mxscreen needs; what the test
//! suites and benchmarks add) and the one way xtask installs them.
//!
//! That way never removes an installed package. Installing the test packages on a mail
//! server would: exim4-daemon-light `Conflicts: mail-transport-agent`, so apt would take
//! Postfix (or exim4-daemon-heavy) away to make room. Every install is first simulated
//! (`apt-get -s`); if apt would remove anything, nothing is installed and the error names
//! what would have gone. The real install also carries `--no-remove`, should the system
//! change in between. The package suite runs this very code (`cargo xtask setup --root`) in
//! a Debian root with Postfix installed.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{is_root, status};

/// Debian packages building mxscreen and running it need (`cargo xtask run`, `deb`, `build`,
/// `lint`), each for a reason. Nothing here conflicts with an MTA.
pub const BUILD: &[(&str, &str)] = &[
    ("gcc", "building bpf-linker and C-backed crates"),
    ("zlib1g-dev", "bpf-linker links against zlib"),
];

/// Debian packages only the test suites and benchmarks use (`cargo xtask test`,
/// `cargo xtask setup --tests`, `cargo xtask bench`), each for a reason.
pub const TESTS: &[(&str, &str)] = &[
    ("iproute2", "ip netns / veth for the namespace tests"),
    ("bpftool", "map memory figures in the datapath benchmark"),
    ("rbldnsd", "DNSBL/DNSWL zones for the reputation tests"),
    (
        "nsd",
        "authoritative reverse/forward zones for the rDNS tests",
    ),
    (
        "unbound",
        "a real recursive resolver between mxscreen and the zones",
    ),
    ("exim4-daemon-light", "the MTA of the end-to-end testbed"),
    ("swaks", "real SMTP clients in the end-to-end testbed"),
    (
        "libio-socket-inet6-perl",
        "swaks needs it to send over IPv6 (the end-to-end testbed)",
    ),
    ("dnsutils", "dig, to wait for DNS servers to answer"),
    (
        "redis-server",
        "the shared bus of the fleet tests (redis-server and redis-cli)",
    ),
    (
        "nftables",
        "`bench drop`: the nftables netdev-ingress set mxscreen is measured against",
    ),
    (
        "iptables",
        "`bench drop`: the ip6tables raw-table rule (legacy backend) in front of ipset",
    ),
    (
        "ipset",
        "`bench drop`: the ipset hash:ip set mxscreen is measured against",
    ),
    (
        "prometheus",
        "promtool, to check the metrics endpoint's output (the package suite)",
    ),
    (
        "systemd-container",
        "systemd-nspawn, to boot a Debian container and install the .deb in it",
    ),
    (
        "mmdebstrap",
        "builds that container's root from Debian's packages",
    ),
    (
        "libcap2-bin",
        "capsh, to run the daemon with exactly the unit's capabilities",
    ),
];

/// Where packages are installed: this machine, or a Debian root directory (a container's
/// file system, entered with systemd-nspawn for every apt and dpkg command).
#[derive(Clone, Debug, Default)]
pub struct Apt {
    pub root: Option<PathBuf>,
}

impl Apt {
    /// `program` as it runs in the target system.
    fn command(&self, program: &str) -> Command {
        let Some(root) = &self.root else {
            return Command::new(program);
        };
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg("-D")
            .arg(root)
            .args(["--quiet", "--pipe", "--register=no", "--keep-unit"])
            .arg("--setenv=DEBIAN_FRONTEND=noninteractive")
            .args(["--", program]);
        cmd
    }

    /// Installs those of `wanted` that are missing, telling why each is needed; returns
    /// whether anything was installed. Refuses (installing nothing) if that would remove an
    /// installed package.
    pub fn ensure(&self, wanted: &[(&str, &str)]) -> Result<bool> {
        let names: Vec<&str> = wanted.iter().map(|(p, _)| *p).collect();
        let missing = self.missing(&names)?;
        if missing.is_empty() {
            return Ok(false);
        }
        for (p, why) in wanted.iter().filter(|(p, _)| missing.contains(p)) {
            eprintln!("setup: installing {p} ({why})");
        }
        self.install(&missing)?;
        Ok(true)
    }

    /// Those of `packages` that dpkg does not have installed.
    pub fn missing<'a>(&self, packages: &[&'a str]) -> Result<Vec<&'a str>> {
        // One query for all; unknown packages make it exit 1 but the known ones are listed.
        let out = self
            .command("dpkg-query")
            .args(["-W", "-f=${Package} ${db:Status-Status}\\n"])
            .args(packages)
            .output()
            .context("dpkg-query (is this a Debian/Ubuntu system?)")?;
        let listed = String::from_utf8_lossy(&out.stdout);
        let installed: Vec<&str> = listed
            .lines()
            .filter_map(|l| l.strip_suffix(" installed"))
            .collect();
        Ok(packages
            .iter()
            .copied()
            .filter(|p| !installed.contains(p))
            .collect())
    }

    /// `apt-get install` of `packages`, as root, without starting any packaged daemon and
    /// without removing anything.
    pub fn install(&self, packages: &[&str]) -> Result<()> {
        if !is_root() {
            bail!(
                "missing Debian packages: {} — run `sudo -E cargo xtask setup` or `sudo apt-get install {}`",
                packages.join(" "),
                packages.join(" ")
            );
        }
        let _policy = NoDaemonStarts::install(self.root.as_deref())?;
        status(self.command("apt-get").args(["update", "-q"]))?;
        let removed = self.removals(packages)?;
        if !removed.is_empty() {
            bail!(
                "refusing to install {}: apt would remove {} (installed here), so nothing was \
                 installed. The test packages include exim4-daemon-light, which replaces any \
                 other MTA: run the tests on a machine or container that is not a mail server, \
                 and build the package on a build host or in CI (README, \"Installing the \
                 package\").",
                packages.join(" "),
                removed.join(", ")
            );
        }
        status(
            self.command("apt-get")
                .args([
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "--no-remove",
                ])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    }

    /// The packages `apt-get install packages` would remove (its simulation's `Remv` lines).
    fn removals(&self, packages: &[&str]) -> Result<Vec<String>> {
        let out = self
            .command("apt-get")
            .args(["install", "-s", "-q", "--no-install-recommends"])
            .args(packages)
            .output()
            .context("apt-get install -s")?;
        if !out.status.success() {
            bail!(
                "apt-get cannot install {}: {}",
                packages.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(removed_by(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// The package names of a simulation's `Remv NAME [VERSION]` lines.
fn removed_by(simulation: &str) -> Vec<String> {
    simulation
        .lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Installing a daemon package must not start the daemon: the tests run their own copies
/// on addresses they choose. A policy-rc.d answering 101 is Debian's way to say so; ours is
/// there for the duration of apt-get (unless the system has one of its own).
struct NoDaemonStarts(Option<PathBuf>);

impl NoDaemonStarts {
    fn install(root: Option<&Path>) -> Result<Self> {
        let policy = root.unwrap_or(Path::new("/")).join("usr/sbin/policy-rc.d");
        if policy.exists() {
            return Ok(Self(None));
        }
        fs::write(
            &policy,
            "#!/bin/sh\n# written by cargo xtask setup for the duration of apt-get\nexit 101\n",
        )
        .with_context(|| format!("writing {}", policy.display()))?;
        fs::set_permissions(&policy, fs::Permissions::from_mode(0o755))?;
        Ok(Self(Some(policy)))
    }
}

impl Drop for NoDaemonStarts {
    fn drop(&mut self) {
        if let Some(policy) = &self.0 {
            let _ = fs::remove_file(policy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulation_names_what_it_would_remove() {
        let sim = "NOTE: This is only a simulation!\n\
                   Remv postfix [3.7.11-0+deb12u1]\n\
                   Inst exim4-base (4.96-15+deb12u7 Debian:12.11/stable [amd64])\n\
                   Inst exim4-daemon-light (4.96-15+deb12u7 Debian:12.11/stable [amd64])\n\
                   Conf exim4-base (4.96-15+deb12u7 Debian:12.11/stable [amd64])\n";
        assert_eq!(removed_by(sim), ["postfix"]);
        assert!(removed_by("Inst gcc (4:12.2.0-3 Debian:12.11/stable [amd64])\n").is_empty());
    }

    #[test]
    fn build_packages_are_not_test_packages() {
        for (p, _) in BUILD {
            assert!(!TESTS.iter().any(|(t, _)| t == p), "{p} in both lists");
        }
    }
}
