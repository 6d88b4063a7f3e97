//! Step kinds: one file per kind of thing on the host. Each checks real state and returns a typed change.

pub mod admin_user;
pub mod apt_keyring;
pub mod backup_repo;
pub mod certificate;
pub mod debconf;
pub mod element;
pub mod file;
pub mod firewall;
pub mod openpgp;
pub mod packages;
pub mod postgres;
pub mod preflight;
pub mod secret;
pub mod service;
