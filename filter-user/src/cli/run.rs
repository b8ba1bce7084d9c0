//! `mxscreen run`: the daemon.

use std::path::PathBuf;

use anyhow::Result;

use crate::{
    daemon::{self, RunOptions},
    datapath::{AttachMode, BackendChoice},
    logging::LogFormat,
};

/// Load and attach the datapath and screen until SIGINT/SIGTERM (SIGHUP reloads the config).
///
/// With no config file and no flags it attaches to the default-route interface, screens
/// port 25 and resolves peers with the built-in DNSBL/DNSWL defaults. Logs one line per
/// verdict (tag `mxscreen-verdict`, key=value fields) to stderr.
///
/// Examples:
///   mxscreen run
///   mxscreen run --iface eth0 --mode tc --observe
///   mxscreen run --config /etc/mxscreen/mxscreen.toml --log-format json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Config file (default: /etc/mxscreen/mxscreen.toml if it exists, else built-in defaults).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Interface to screen (repeatable); overrides datapath.interfaces.
    #[arg(long = "iface", short = 'i')]
    interfaces: Vec<String>,
    /// Attach mode; overrides datapath.mode.
    #[arg(long, value_enum)]
    mode: Option<AttachMode>,
    /// What refuses the SYNs (auto: eBPF when it loads and attaches, else nftables);
    /// overrides datapath.backend.
    #[arg(long, value_enum)]
    backend: Option<BackendChoice>,
    /// Decide, log and count, but never drop or limit (also policy.observe).
    #[arg(long)]
    observe: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
}

pub fn main(args: Args) -> Result<()> {
    crate::logging::init(args.log_format);
    // One thread for the main loop and the engine's lookups: every step of a new peer (its
    // event, the engine's queue, the DNS answers, the verdict) hands over to the next
    // without waking another thread. Blocking work (feeds, the MTA sockets, the balancer
    // watch) has threads of its own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(daemon::run(RunOptions {
        config: args.config,
        interfaces: args.interfaces,
        mode: args.mode,
        backend: args.backend,
        observe: args.observe,
    }))
}
