//! How big the machine really is, and how its memory is split between the services that share it.
//!
//! A server is sized from what its processes may use: the smaller of the host's totals (sysinfo) and the
//! limits of the cgroup the whole system runs in (a container, a VPS built on one). A container guest sees
//! the host's RAM in /proc/meminfo, and PostgreSQL sized from that would be killed, or swap, long before it
//! filled its buffers. Only the root of the cgroup tree this host sees counts: the limit of the shell that
//! runs `apply` says nothing about what the services get.
//!
//! The split (every service's own settings follow from its share, see the templates):
//! - the OS: RAM / 4, at least 512 MB, at most 4 GB: the kernel, nginx, coturn, sshd and the page cache that
//!   PostgreSQL's data files and Synapse's media are read through;
//! - PostgreSQL: 2/5 of the rest (shared buffers plus per-connection and maintenance memory);
//! - Synapse and its workers: 3/5 of the rest (the processes themselves plus their caches: Synapse is the
//!   service whose memory grows with use, its caches are bounded to this share).

use std::path::Path;

use serde::Serialize;

use crate::system::System;

use crate::layout::{
    CGROUP_V1_CPU_PERIOD as V1_CPU_PERIOD, CGROUP_V1_CPU_QUOTA as V1_CPU_QUOTA,
    CGROUP_V1_MEMORY_LIMIT as V1_MEMORY_LIMIT, CGROUP_V2_CPU_MAX as V2_CPU_MAX,
    CGROUP_V2_MEMORY_MAX as V2_MEMORY_MAX,
};

/// The machine the services get, and the memory budget of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sizing {
    /// min(host RAM, cgroup memory limit), in MB.
    pub ram_mb: u64,
    /// min(host CPUs, cgroup CPU quota rounded up).
    pub cpus: u32,
    /// The host's totals (sysinfo), for the comments: ram_mb/cpus below them came from the cgroup.
    pub host_ram_mb: u64,
    pub host_cpus: u32,
    pub os_mb: u64,
    pub postgres_mb: u64,
    pub synapse_mb: u64,
}

impl Sizing {
    /// The split for a machine of `ram_mb` and `cpus`, with no cgroup limit below the host's totals.
    pub fn of(ram_mb: u64, cpus: u32) -> Sizing {
        Sizing::limited(ram_mb, cpus, None, None)
    }

    /// The split for a host of `host_ram_mb`/`host_cpus` whose cgroup allows `cgroup_ram_mb`/`cgroup_cpus`.
    pub fn limited(
        host_ram_mb: u64,
        host_cpus: u32,
        cgroup_ram_mb: Option<u64>,
        cgroup_cpus: Option<u32>,
    ) -> Sizing {
        let ram_mb = cgroup_ram_mb.map_or(host_ram_mb, |c| c.min(host_ram_mb));
        let cpus = cgroup_cpus.map_or(host_cpus, |c| c.min(host_cpus)).max(1);
        let os_mb = (ram_mb / 4).clamp(512, 4096).min(ram_mb);
        let rest = ram_mb - os_mb;
        let postgres_mb = rest * 2 / 5;
        Sizing {
            ram_mb,
            cpus,
            host_ram_mb,
            host_cpus,
            os_mb,
            postgres_mb,
            synapse_mb: rest - postgres_mb,
        }
    }

    /// Read the cgroup limits through the System seam; `host_ram_mb`/`host_cpus` are sysinfo's totals.
    pub fn of_host(sys: &dyn System, host_ram_mb: u64, host_cpus: u32) -> Sizing {
        let text = |p: &str| {
            sys.read(Path::new(p))
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        };
        let memory = text(V2_MEMORY_MAX)
            .and_then(|s| memory_limit_mb(&s))
            .or_else(|| text(V1_MEMORY_LIMIT).and_then(|s| memory_limit_mb(&s)));
        let cpus = text(V2_CPU_MAX).and_then(|s| cpu_max(&s)).or_else(|| {
            let quota = text(V1_CPU_QUOTA)?;
            let period = text(V1_CPU_PERIOD)?;
            cpu_max(&format!("{quota} {period}"))
        });
        Sizing::limited(host_ram_mb, host_cpus, memory, cpus)
    }
}

/// memory.max ("max" or bytes) / memory.limit_in_bytes (bytes; "unlimited" is a huge number) in MB.
fn memory_limit_mb(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().map(|b| b / (1024 * 1024))
}

/// cpu.max "QUOTA PERIOD" ("max" or -1: no quota) as whole CPUs, rounded up (1.5 CPUs can run 2 threads).
fn cpu_max(s: &str) -> Option<u32> {
    let mut f = s.split_whitespace();
    let quota: i64 = f.next()?.parse().ok()?;
    let period: i64 = f.next()?.parse().ok()?;
    if quota <= 0 || period <= 0 {
        return None;
    }
    Some(((quota + period - 1) / period) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::FakeSystem;

    #[test]
    fn split_leaves_the_os_a_quarter_within_bounds_and_gives_synapse_more_than_postgres() {
        let s = Sizing::of(4096, 2);
        assert_eq!((s.os_mb, s.postgres_mb, s.synapse_mb), (1024, 1228, 1844));
        assert_eq!(s.os_mb + s.postgres_mb + s.synapse_mb, 4096);
        // Small: the OS keeps 512 MB. Big: it keeps 4 GB, the rest goes to the services.
        let small = Sizing::of(1024, 1);
        assert_eq!(
            (small.os_mb, small.postgres_mb, small.synapse_mb),
            (512, 204, 308)
        );
        let big = Sizing::of(65536, 16);
        assert_eq!(big.os_mb, 4096);
        assert_eq!(big.postgres_mb + big.synapse_mb, 65536 - 4096);
        // Below the OS floor there is nothing to split, and nothing underflows.
        let tiny = Sizing::of(300, 1);
        assert_eq!((tiny.os_mb, tiny.postgres_mb, tiny.synapse_mb), (300, 0, 0));
    }

    #[test]
    fn a_cgroup_limit_below_the_host_wins_and_is_named() {
        let sys = FakeSystem::new();
        sys.put(V2_MEMORY_MAX, "4294967296\n");
        sys.put(V2_CPU_MAX, "150000 100000\n");
        let s = Sizing::of_host(&sys, 24105, 8);
        assert_eq!((s.ram_mb, s.cpus), (4096, 2));
        assert_eq!((s.host_ram_mb, s.host_cpus), (24105, 8));
        assert_eq!(s, Sizing::limited(24105, 8, Some(4096), Some(2)));
    }

    #[test]
    fn no_limit_or_a_limit_above_the_host_means_the_host() {
        let sys = FakeSystem::new();
        sys.put(V2_MEMORY_MAX, "max\n");
        sys.put(V2_CPU_MAX, "max 100000\n");
        assert_eq!(Sizing::of_host(&sys, 2048, 2), Sizing::of(2048, 2));
        // cgroup v1 (a hybrid host): "unlimited" is a huge byte count, no quota is -1.
        let v1 = FakeSystem::new();
        v1.put(V1_MEMORY_LIMIT, "9223372036854771712\n");
        v1.put(V1_CPU_QUOTA, "-1\n");
        v1.put(V1_CPU_PERIOD, "100000\n");
        let s = Sizing::of_host(&v1, 2048, 2);
        assert_eq!(s, Sizing::of(2048, 2));
        assert_eq!((s.ram_mb, s.host_ram_mb), (2048, 2048));
        // Nothing readable at all (no /sys/fs/cgroup): the host's totals.
        assert_eq!(
            Sizing::of_host(&FakeSystem::new(), 2048, 2),
            Sizing::of(2048, 2)
        );
    }

    #[test]
    fn cgroup_v1_limits_count_too() {
        let sys = FakeSystem::new();
        sys.put(V1_MEMORY_LIMIT, "2147483648\n");
        sys.put(V1_CPU_QUOTA, "100000\n");
        sys.put(V1_CPU_PERIOD, "100000\n");
        let s = Sizing::of_host(&sys, 16384, 4);
        assert_eq!((s.ram_mb, s.cpus), (2048, 1));
    }
}
