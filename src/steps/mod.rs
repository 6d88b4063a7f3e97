//! Step kinds: one file per kind of thing on the host. Each checks real state and returns a typed change.

pub mod admin_user;
pub mod apt_keyring;
pub mod backup_repo;
pub mod certificate;
pub mod debconf;
pub mod element;
pub mod file;
pub mod firewall;
pub mod metrics;
pub mod openpgp;
pub mod packages;
pub mod postgres;
pub mod preflight;
pub mod secret;
pub mod service;
pub mod workers;

/// Wait until no process holds any of `locks` (fcntl locks, the kind dpkg and certbot take), polling
/// with the service backoff: the holder is another run of the tool (a timer, unattended-upgrades, the
/// orphan of a killed apply) that will finish on its own, so waiting beats failing.
pub fn wait_for_locks(
    ctx: &crate::engine::Ctx,
    locks: &[&str],
    limit: std::time::Duration,
    what: &str,
) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let mut pause = service::backoff();
    loop {
        let mut holder = None;
        for lock in locks {
            holder = holder.or(ctx.sys.lock_holder(std::path::Path::new(lock))?);
        }
        match holder {
            None => return Ok(()),
            Some(pid) if start.elapsed() >= limit => anyhow::bail!(
                "another {what} (pid {pid}) has held its lock for {} s; let it finish (see `ps -p {pid}`) and run again",
                limit.as_secs()
            ),
            Some(_) => std::thread::sleep(pause.next().unwrap_or_default()),
        }
    }
}
