//! `maintenance [HOST_TOML]`: what matrix-maintenance.timer runs (see crate::maintenance).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::admin::{HttpTransport, Session};
use crate::backup::human_bytes;
use crate::system::RealSystem;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub host_toml: super::HostToml,
    /// Print the report as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(args: &Args) -> Result<u8> {
    let config = args.host_toml.load()?;
    let sys = RealSystem::new("/");
    let transport = HttpTransport::loopback();
    let session = match config.media.purge_remote_media_days {
        Some(_) => Some(Session::open(&sys, &transport)?),
        None => None,
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let r = crate::maintenance::run(&sys, &config, session.as_ref(), now_ms)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    let esc = crate::report::escape;
    if let (Some(n), Some(days)) = (r.purged_remote_media, config.media.purge_remote_media_days) {
        println!("purged {n} cached remote media files not accessed for {days} days");
    }
    println!(
        "database {}: {}",
        crate::backup::DATABASE,
        human_bytes(r.database_bytes)
    );
    if let Some(m) = r.media_store_bytes {
        println!(
            "media store {}: {}",
            crate::backup::MEDIA_STORE,
            human_bytes(m)
        );
    }
    println!("largest rooms (events):");
    for room in &r.largest_rooms {
        println!(
            "  {:>9}  {}  {}",
            room.events,
            esc(&room.room_id),
            esc(&room.name)
        );
    }
    Ok(0)
}
