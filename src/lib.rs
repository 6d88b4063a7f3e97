//! matrix-provision: converge a Debian 12 or 13 host to a working Matrix homeserver.
//!
//! Layout: `config` (host.toml) → `playbook` (the step graph, loaded from `playbooks/`) →
//! `engine` (check → plan → apply → verify over the graph) → `steps` (one file per step kind), all
//! touching the host only through `system::System`. `render` fills `templates/`; `report` is the one
//! place that prints a run; `element` installs and updates Element Web.

pub mod admin;
pub mod backup;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod edge_config;
pub mod element;
pub mod engine;
pub mod http;
pub mod layout;
pub mod listeners;
pub mod maintenance;
pub mod playbook;
pub mod release;
pub mod render;
pub mod report;
pub mod secrets;
pub mod sizing;
pub mod steps;
pub mod system;
pub mod workers;
