//! The `mxscreen` command line: one file per subcommand, help text from doc comments.
//! Usage errors (bad address, bad duration, unknown flag) print one line and exit 2; runtime
//! errors print one line and exit 1.

mod allow;
mod block;
mod check;
mod config;
mod connect;
mod feed;
mod forget;
mod list;
mod out;
mod report;
mod run;
mod stats;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand, error::ErrorKind};

/// mxscreen — screens SMTP connections in the kernel (XDP/tc) before the MTA spends a process
/// on them, from DNSBL/DNSWL and reverse-DNS reputation.
#[derive(Parser)]
#[command(name = "mxscreen", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::Args),
    Check(check::Args),
    Block(block::BlockArgs),
    Unblock(block::UnblockArgs),
    Allow(allow::AllowArgs),
    Unallow(allow::UnallowArgs),
    #[command(visible_alias = "recheck")]
    Forget(forget::Args),
    List(list::Args),
    Stats(stats::Args),
    Status(status::Args),
    Report(report::Args),
    /// Check a config file, print the complete default config, or import a postscreen or
    /// Exim DNSBL policy.
    #[command(subcommand)]
    Config(config::Command),
    /// Reload a blocklist feed now (`feed reload NAME [--force]`).
    #[command(subcommand)]
    Feed(feed::Command),
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            let _ = e.print();
            return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(e) => {
            eprintln!("mxscreen: {}", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run(a) => run::main(a),
        Command::Check(a) => check::main(a),
        Command::Block(a) => block::block(a),
        Command::Unblock(a) => block::unblock(a),
        Command::Allow(a) => allow::allow(a),
        Command::Unallow(a) => allow::unallow(a),
        Command::Forget(a) => forget::main(a),
        Command::List(a) => list::main(a),
        Command::Stats(a) => stats::main(a),
        Command::Status(a) => status::main(a),
        Command::Report(a) => report::main(a),
        Command::Config(c) => config::main(c),
        Command::Feed(c) => feed::main(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read our output has what they wanted (`list | head -1`): a quiet end.
        Err(e) if out::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mxscreen: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// clap's first line without its `error: ` prefix (the usage and hint lines follow it).
fn one_line(s: &str) -> String {
    let first = s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s);
    first.trim_start_matches("error: ").trim().to_owned()
}

/// A duration such as `90s`, `10m`, `24h`, `7d` for clap.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::duration::parse(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err(format!("duration {s:?} is zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand has a help line in `mxscreen --help`.
    #[test]
    fn every_subcommand_has_help() {
        use clap::CommandFactory as _;
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            assert!(
                sub.get_about()
                    .is_some_and(|a| !a.to_string().trim().is_empty()),
                "{} has no help line",
                sub.get_name()
            );
            for inner in sub.get_subcommands() {
                assert!(
                    inner.get_about().is_some(),
                    "{} {}",
                    sub.get_name(),
                    inner.get_name()
                );
            }
        }
    }

    #[test]
    fn bad_input_is_one_line_exit_2() {
        for args in [
            vec!["mxscreen", "block", "300.1.1.1"],
            vec!["mxscreen", "block", "192.0.2.1", "--for", "ten minutes"],
            vec!["mxscreen", "block", "192.0.2.1", "--frobnicate"],
            vec!["mxscreen", "check", "not-an-ip"],
        ] {
            let e = Cli::try_parse_from(&args).err().expect("must not parse");
            assert_eq!(e.exit_code(), 2, "{args:?}");
            let line = one_line(&e.to_string());
            assert!(!line.contains('\n') && !line.is_empty(), "{args:?}: {line}");
        }
        let e = Cli::try_parse_from(["mxscreen", "block", "300.1.1.1"])
            .err()
            .unwrap();
        assert!(
            one_line(&e.to_string()).contains("not an IP address or CIDR prefix"),
            "{e}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
        assert!(parse_duration("0s").is_err());
    }
}
