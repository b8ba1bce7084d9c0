//! How a CLI command finds the daemon: `--socket`, else `control.socket` from the config
//! file (`--config`, else the default path if it exists), else the default socket.

use std::path::PathBuf;

use anyhow::Result;

use crate::{config::Config, control::client::Client};

#[derive(clap::Args, Clone, Debug)]
pub struct Connect {
    /// Control socket of the daemon (default: control.socket from the config).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Config file to read control.socket from (default: /etc/mxscreen/mxscreen.toml).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
}

impl Connect {
    pub fn socket_path(&self) -> Result<PathBuf> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        Ok(Config::resolve(self.config.as_deref())?.0.control.socket)
    }

    /// Runs one client call to completion, e.g. `connect.call(Client::status)`.
    pub fn call<T, E, F>(&self, request: impl FnOnce(Client) -> F) -> Result<T>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<anyhow::Error>,
    {
        let client = Client::new(self.socket_path()?);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(request(client)).map_err(Into::into)
    }
}
