//! The read-only view of a step graph: what the host looks like once apply has converged it, as the steps
//! themselves say (each [`Step::expect`](super::Step::expect) adds its part). `doctor` checks the live host
//! against it, so a service, port, certificate or file added to a playbook is checked with no doctor change.

use std::path::PathBuf;

use serde::Serialize;

use super::Node;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExpectedState {
    /// systemd units that are active once converged, in graph order, without duplicates.
    pub units: Vec<ExpectedUnit>,
    /// The ufw allow rules ("22/tcp", "49152:65535/udp"); None when no step manages the firewall.
    pub firewall: Option<Vec<String>>,
    /// Some when the firewall step keeps SSH open: the configured `firewall.ssh_ports`, to which the
    /// ports sshd is found listening on at check time are added (`system::tools::detect_ssh_ports`).
    pub firewall_ssh: Option<Vec<u16>>,
    /// Certificate lineages certbot keeps (or the admin provides).
    pub certificates: Vec<ExpectedCert>,
    /// TLS listeners on this host and the certificate each should present.
    pub tls: Vec<ExpectedTls>,
    /// Files, directories and links with their owner, mode and (where apply decides it) contents.
    pub files: Vec<ExpectedFile>,
    /// PostgreSQL databases: UTF8 with C collation and ctype (Synapse refuses anything else).
    pub databases: Vec<String>,
    /// Backups are on: where their last result is kept and how old the last success may get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<ExpectedBackup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedBackup {
    /// `backup::State` as JSON (see `backup::STATE_FILE`).
    pub state_file: PathBuf,
    /// The service the timer starts (its journal explains a failure).
    pub unit: String,
    pub schedule: String,
    /// An older last success is overdue.
    pub max_age_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedUnit {
    pub unit: String,
    /// A URL that answers once the service is up (Synapse's /health).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_url: Option<String>,
    /// A command (argv) whose output holds `expect` while the service works (Redis: PING → PONG).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<ExpectedProbe>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedProbe {
    pub argv: Vec<String>,
    pub expect: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedCert {
    pub name: String,
    /// The leaf certificate (certbot's `live/<name>/cert.pem`).
    pub cert: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedTls {
    /// The unit that serves it (reloading or restarting it makes it read a renewed certificate).
    pub unit: String,
    /// The SNI name asked for.
    pub name: String,
    pub port: u16,
    /// The certificate on disk it must present (its first PEM block is compared).
    pub cert: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpectedFile {
    pub path: PathBuf,
    pub kind: ExpectedKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExpectedKind {
    File {
        owner: FileOwner,
        /// None: any non-empty contents (a secret: generated once, never compared).
        #[serde(skip)]
        contents: Option<Contents>,
    },
    Dir {
        owner: FileOwner,
    },
    Symlink {
        target: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileOwner {
    pub user: String,
    pub group: String,
    pub mode: u32,
}

/// What a file holds once converged.
#[derive(Clone, PartialEq, Eq)]
pub enum Contents {
    /// Exactly these bytes (a rendered template; may hold secrets, so never printed).
    Bytes(Vec<u8>),
    /// The same bytes as another file (a certificate copied for a service user).
    SameAs(PathBuf),
}

impl std::fmt::Debug for Contents {
    // Rendered files may hold secrets: a dumped expectation shows only their size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Contents::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Contents::SameAs(p) => write!(f, "SameAs({})", p.display()),
        }
    }
}

impl ExpectedState {
    /// Collect what every step of the graph expects (handlers expect nothing: they only act).
    pub fn of(nodes: &[Node]) -> ExpectedState {
        let mut state = ExpectedState::default();
        for node in nodes.iter().filter(|n| !n.handler) {
            node.step.expect(&mut state);
        }
        state
    }

    /// A unit that must be active; listed once however many steps rely on it.
    pub fn unit(&mut self, unit: &str, health_url: Option<&str>) {
        match self.units.iter_mut().find(|u| u.unit == unit) {
            Some(u) => {
                if u.health_url.is_none() {
                    u.health_url = health_url.map(str::to_string);
                }
            }
            None => self.units.push(ExpectedUnit {
                unit: unit.to_string(),
                health_url: health_url.map(str::to_string),
                probe: None,
            }),
        }
    }

    /// A command that must answer `expect` while `unit` works (added to the unit's entry).
    pub fn probe(&mut self, unit: &str, argv: Vec<String>, expect: &str) {
        self.unit(unit, None);
        if let Some(u) = self.units.iter_mut().find(|u| u.unit == unit) {
            u.probe = Some(ExpectedProbe {
                argv,
                expect: expect.to_string(),
            });
        }
    }

    /// Rules ufw must allow (the firewall step's list).
    pub fn allow(&mut self, rules: &[String]) {
        let list = self.firewall.get_or_insert_with(Vec::new);
        for r in rules {
            if !list.contains(r) {
                list.push(r.clone());
            }
        }
    }
}
