//! `edge-config KIND HOST_TOML`: print the edge's configuration for a host behind one (stdout only).

use anyhow::{anyhow, Result};

use crate::edge_config::{self, EdgeKind};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which edge: cloudflared (a tunnel's ingress rules), apache, haproxy, caddy.
    #[arg(value_enum)]
    pub kind: EdgeKind,
    /// host.toml of this server (edge.mode = "proxied").
    #[arg(value_name = "HOST_TOML")]
    pub host_toml: std::path::PathBuf,
}

pub fn execute(args: &Args) -> Result<u8> {
    let config = crate::config::load(&args.host_toml).map_err(|e| anyhow!("{e}"))?;
    print!("{}", edge_config::render(&config, args.kind)?);
    Ok(0)
}
