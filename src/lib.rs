//! matrix-provision: converge a Debian 12 host to a working Matrix homeserver.
//!
//! Layout: `config` (host.toml) → `playbook` (the step graph, loaded from `playbooks/`) →
//! `engine` (check → plan → apply → verify over the graph) → `steps` (one file per step kind), all
//! touching the host only through `system::System`. `report` is the one place that prints.

pub mod cli;
pub mod config;
pub mod element;
pub mod http;
