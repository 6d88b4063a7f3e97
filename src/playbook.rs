//! The step graph as data. `playbooks/*.toml` (compiled in) are minijinja templates of TOML: rendered with
//! the host's config and facts (so `{% if config.turn.enabled %}` leaves steps out), parsed, and turned
//! into engine nodes, one step kind per `kind`. Templates for files are rendered here too, with secrets.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::config::HostConfig;
use crate::engine::{ExpectedState, Node, Step};
use crate::layout;
use crate::render::{self, RenderContext, Renderer};
use crate::secrets::SecretStore;
use crate::steps::{
    admin_user::AdminUserStep,
    apt_keyring::AptKeyringStep,
    backup_repo::BackupRepoStep,
    certificate::{Acme, CertificateStep, UnusedCertificateStep},
    debconf::DebconfStep,
    element::{ElementStep, SystemUserStep},
    file::{Contents, DirStep, FileStep, Owner, SymlinkStep, UnlinkStep},
    firewall::FirewallStep,
    metrics::{AbsentStep, HtpasswdStep, PostgresRoleStep},
    packages::PackagesStep,
    postgres::PostgresStep,
    preflight::PreflightStep,
    secret::SecretStep,
    service::{Action, DisabledStep, HandlerStep, Served, ServiceStep},
    workers::WorkersPruneStep,
};
use crate::system::{Cmd, System};

pub const PLAYBOOKS: &[(&str, &str)] = &[
    ("00-base.toml", include_str!("../playbooks/00-base.toml")),
    (
        "10-postgres.toml",
        include_str!("../playbooks/10-postgres.toml"),
    ),
    (
        "20-synapse.toml",
        include_str!("../playbooks/20-synapse.toml"),
    ),
    (
        "25-workers.toml",
        include_str!("../playbooks/25-workers.toml"),
    ),
    (
        "30-nginx-tls.toml",
        include_str!("../playbooks/30-nginx-tls.toml"),
    ),
    (
        "35-certbot.toml",
        include_str!("../playbooks/35-certbot.toml"),
    ),
    (
        "40-coturn.toml",
        include_str!("../playbooks/40-coturn.toml"),
    ),
    (
        "50-element.toml",
        include_str!("../playbooks/50-element.toml"),
    ),
    (
        "60-firewall.toml",
        include_str!("../playbooks/60-firewall.toml"),
    ),
    (
        "70-backup.toml",
        include_str!("../playbooks/70-backup.toml"),
    ),
    (
        "75-upkeep.toml",
        include_str!("../playbooks/75-upkeep.toml"),
    ),
    (
        "70-metrics.toml",
        include_str!("../playbooks/70-metrics.toml"),
    ),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaybookFile {
    #[serde(default)]
    step: Vec<StepDef>,
    #[serde(default)]
    handler: Vec<HandlerDef>,
}

#[derive(Debug, Deserialize)]
struct StepDef {
    id: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    notify: Vec<String>,
    /// Resources this step holds alone while it runs (see `engine::Node::exclusive`).
    #[serde(default)]
    exclusive: Vec<String>,
    #[serde(flatten)]
    kind: Kind,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Kind {
    Preflight {
        /// TCP ports nginx must be free to bind (or hold already).
        ports: Vec<u16>,
        /// Names whose DNS should point here (a warning otherwise).
        names: Vec<String>,
    },
    Template {
        template: String,
        dest: PathBuf,
        #[serde(default = "root_owner")]
        owner: String,
        mode: String,
        #[serde(default)]
        sensitive: bool,
        /// argv of the service's config test, run with the candidate in place (see steps::file).
        #[serde(default)]
        validate: Vec<String>,
        /// One template rendered per item (a worker's name): the template sees it as `item`.
        #[serde(default)]
        item: Option<String>,
    },
    /// Worker instances on the host that the layout no longer has: stopped, disabled, config removed.
    WorkersPrune {
        keep: Vec<String>,
        #[serde(default)]
        note: Option<String>,
    },
    Copy {
        src: PathBuf,
        dest: PathBuf,
        owner: String,
        mode: String,
        #[serde(default)]
        sensitive: bool,
        #[serde(default)]
        validate: Vec<String>,
    },
    Dir {
        path: PathBuf,
        #[serde(default = "root_owner")]
        owner: String,
        mode: String,
    },
    Symlink {
        link: PathBuf,
        target: PathBuf,
        #[serde(default)]
        validate: Vec<String>,
    },
    Unlink {
        link: PathBuf,
        target: PathBuf,
    },
    Secret {
        name: String,
        path: PathBuf,
        owner: String,
        mode: String,
    },
    AptKeyring {
        url: String,
        fingerprint: String,
        dest: PathBuf,
    },
    Debconf {
        package: String,
        answers: Vec<[String; 3]>,
    },
    Packages {
        names: Vec<String>,
        #[serde(default)]
        defer_start: Vec<String>,
        #[serde(default)]
        require_candidate: Vec<crate::steps::packages::Candidate>,
    },
    Postgres {
        role: String,
        database: String,
        password_secret: String,
    },
    Certificate {
        name: String,
    },
    Service {
        unit: String,
        #[serde(default)]
        wait_http: Option<String>,
        #[serde(default)]
        instance: Option<String>,
        #[serde(default)]
        tls: Vec<TlsDef>,
        /// argv whose stdout must hold `probe_expect` once the service is up (Redis: PING → PONG).
        #[serde(default)]
        probe: Vec<String>,
        #[serde(default)]
        probe_expect: Option<String>,
    },
    Disabled {
        unit: String,
        #[serde(default)]
        only_if: Option<PathBuf>,
    },
    Element,
    SystemUser {
        name: String,
        home: String,
    },
    Firewall {
        allow: Vec<String>,
        #[serde(default)]
        managed_ports: Vec<u16>,
    },
    CertificateUnused {
        name: String,
    },
    AdminUser {
        name: String,
    },
    BackupRepository,
    /// A file of ours that host.toml no longer wants.
    Absent {
        path: PathBuf,
        #[serde(default)]
        prune_dir: bool,
        #[serde(default)]
        only_managed: bool,
    },
    /// A unit of a feature now off: stopped and disabled while `marker` (our drop-in) exists.
    UnitOff {
        unit: String,
        marker: PathBuf,
    },
    Htpasswd {
        path: PathBuf,
        user: String,
        secret: String,
        owner: String,
        mode: String,
    },
    PostgresRole {
        role: String,
        #[serde(default)]
        member_of: Vec<String>,
        #[serde(default = "yes")]
        present: bool,
        #[serde(default)]
        marker: Option<PathBuf>,
    },
}

fn yes() -> bool {
    true
}

/// `tls = [{ name, port, cert }]` of a service step: what it presents on a TLS port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsDef {
    name: String,
    port: u16,
    cert: PathBuf,
}

fn root_owner() -> String {
    "root:root".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandlerDef {
    id: String,
    action: String,
    unit: String,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    validate: Vec<String>,
    #[serde(default)]
    wait_http: Option<String>,
    #[serde(default)]
    exclusive: Vec<String>,
}

/// Everything a run needs: the nodes and the secrets they were rendered with.
pub struct Graph {
    pub nodes: Vec<Node>,
    pub secrets: SecretStore,
    /// Every file rendered from a template, as the playbooks place it (golden tests compare these).
    pub rendered: Vec<RenderedFile>,
    /// Directories our atomic writer writes into: where a killed run may have left temp files.
    pub write_dirs: std::collections::BTreeSet<PathBuf>,
}

impl Graph {
    /// Remove the temp files a killed run left where we write (apply calls it under the run lock, before
    /// any step). A leftover executable in renewal-hooks/deploy/ would otherwise sit there for good.
    pub fn sweep_leftovers(&self, sys: &dyn System) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for dir in &self.write_dirs {
            removed.extend(sys.sweep_temps(dir)?);
        }
        Ok(removed)
    }
}

/// The directory a file-writing step writes into.
/// Whether the step changes nginx's configuration tree or runs its config test. Such steps hold
/// [`layout::NGINX_CONFIG_LOCK`] one at a time: `nginx -t` globs sites-enabled/* and then opens each
/// file, so a link removed in between fails another step's check (it did, switching an edge host back
/// to direct). Derived from what the step touches, so no playbook can forget it.
fn touches_nginx_config(kind: &Kind) -> bool {
    let path = match kind {
        Kind::Template { dest, .. } | Kind::Copy { dest, .. } => Some(dest),
        Kind::Symlink { link, .. } | Kind::Unlink { link, .. } => Some(link),
        Kind::Absent { path, .. } | Kind::Htpasswd { path, .. } => Some(path),
        _ => None,
    };
    let validate = match kind {
        Kind::Template { validate, .. }
        | Kind::Copy { validate, .. }
        | Kind::Symlink { validate, .. } => validate.as_slice(),
        _ => &[],
    };
    path.is_some_and(|p| p.starts_with(layout::NGINX_CONFIG_DIR)) || runs_nginx_test(validate)
}

fn runs_nginx_test(argv: &[String]) -> bool {
    argv.first().is_some_and(|a| a == "nginx")
}

/// `resources` plus nginx's config lock when `needed`, once.
fn with_nginx_lock(mut resources: Vec<String>, needed: bool) -> Vec<String> {
    if needed && !resources.iter().any(|r| r == layout::NGINX_CONFIG_LOCK) {
        resources.push(layout::NGINX_CONFIG_LOCK.to_string());
    }
    resources
}

fn written_dir(kind: &Kind) -> Option<PathBuf> {
    let path = match kind {
        Kind::Template { dest, .. } | Kind::Copy { dest, .. } => dest,
        Kind::Symlink { link, .. } => link,
        Kind::Secret { path, .. }
        | Kind::AptKeyring { dest: path, .. }
        | Kind::Htpasswd { path, .. } => path,
        // Both rewrite the lineage's renewal configuration (autorenew) through the atomic writer.
        Kind::Certificate { .. } | Kind::CertificateUnused { .. } => {
            return Some(PathBuf::from(layout::LETSENCRYPT_RENEWAL))
        }
        _ => return None,
    };
    path.parent().map(PathBuf::from)
}

impl Graph {
    /// What the host looks like once this graph is applied (read-only; what `doctor` checks).
    pub fn expected_state(&self) -> ExpectedState {
        ExpectedState::of(&self.nodes)
    }
}

pub struct RenderedFile {
    pub template: String,
    pub dest: PathBuf,
    pub owner: Owner,
    pub contents: String,
}

/// Facts that only the host can tell (RAM, CPUs), gathered once per run. (The SSH ports are the
/// firewall step's to find, at check time.) RAM and CPUs are what the services get: the host's totals
/// or its cgroup's limits, whichever is smaller.
pub fn facts(sys: &dyn System) -> render::Facts {
    let f = sys.facts();
    let release = crate::release::Release::of_host(sys);
    let sizing = crate::sizing::Sizing::of_host(sys, f.ram_mb, f.cpus);
    render::Facts {
        ram_mb: sizing.ram_mb,
        cpus: sizing.cpus,
        sizing,
        release,
        addresses: f.addresses.iter().map(|a| a.to_string()).collect(),
        // Unreadable (a fake host, a plan as a user): every directory counts as on "/".
        mounts: sys
            .read(std::path::Path::new("/proc/self/mountinfo"))
            .ok()
            .flatten()
            .map(|b| render::mount_points(&String::from_utf8_lossy(&b)))
            .unwrap_or_default(),
    }
}

/// Every name a direct host needs a certificate for (see [`crate::listeners::cert_names`]).
pub fn cert_names(config: &HostConfig) -> Vec<String> {
    crate::listeners::cert_names(config)
}

fn definitions(renderer: &Renderer, ctx: &RenderContext) -> Result<Vec<PlaybookFile>> {
    let ctx = ctx.to_value();
    PLAYBOOKS
        .iter()
        .map(|(name, _)| {
            let text = renderer.render(&format!("playbooks/{name}"), &ctx)?;
            toml::from_str(&text).with_context(|| format!("playbooks/{name} (after rendering)"))
        })
        .collect()
}

/// Where this run's inputs live on the host (copied for the update timer).
pub struct Inputs {
    pub config_path: PathBuf,
    pub self_exe: PathBuf,
}

/// Render and parse the playbooks for this host and turn them into engine nodes (reads, never writes).
pub fn build(
    config: &HostConfig,
    inputs: &Inputs,
    sys: &dyn System,
    dry_run: bool,
) -> Result<Graph> {
    let renderer = Renderer::new();
    // Playbooks render with the context templates get, before any secret is loaded (the playbooks
    // declare them): a playbook naming `secrets.…` fails to render.
    let mut render_ctx = RenderContext::new(config.clone(), facts(sys), inputs);
    let files = definitions(&renderer, &render_ctx)?;
    let mut secrets = SecretStore::new();
    for def in files.iter().flat_map(|f| &f.step) {
        if let Kind::Secret { name, path, .. } = &def.kind {
            secrets.load(sys, name, path)?;
        }
    }
    // The admin's password and token are no template's input, but they are secrets all the same. An
    // unreadable file (plan as a normal user) just means there is nothing to redact yet.
    if let Ok(Some(admin)) = crate::admin::Credentials::load(sys) {
        secrets.remember(&admin.password);
        if let Some(token) = &admin.access_token {
            secrets.remember(token);
        }
    }
    // A step naming a secret no secret step declares fails here, not halfway through apply.
    for def in files.iter().flat_map(|f| &f.step) {
        if let Kind::Postgres {
            password_secret, ..
        } = &def.kind
        {
            if secrets.get(password_secret).is_none() {
                bail!(
                    "step `{}`: password_secret `{password_secret}` names no secret step",
                    def.id
                );
            }
        }
    }
    render_ctx.secrets = render::Secrets::from_store(&secrets);
    let render_ctx = render_ctx.to_value();
    // The state directory: the pending-handlers file and the admin's credentials are written there.
    let mut write_dirs = std::collections::BTreeSet::from([PathBuf::from(layout::STATE_DIR)]);
    let mut nodes = Vec::new();
    let mut rendered = Vec::new();
    for file in files {
        for def in file.step {
            let description = def.description.clone().unwrap_or_else(|| def.id.clone());
            write_dirs.extend(written_dir(&def.kind));
            let exclusive = with_nginx_lock(def.exclusive, touches_nginx_config(&def.kind));
            let step = make_step(
                def.kind,
                config,
                &renderer,
                &render_ctx,
                dry_run,
                &mut rendered,
            )
            .with_context(|| format!("step `{}`", def.id))?;
            nodes.push(Node {
                id: def.id,
                description,
                step,
                after: def.after,
                notify: def.notify,
                handler: false,
                exclusive,
            });
        }
        for h in file.handler {
            let action = match h.action.as_str() {
                "restart" => Action::Restart,
                "reload" => Action::Reload,
                "daemon-reload" => Action::DaemonReload,
                other => bail!(
                    "handler `{}`: unknown action `{other}` (restart, reload, daemon-reload)",
                    h.id
                ),
            };
            let exclusive = with_nginx_lock(h.exclusive, runs_nginx_test(&h.validate));
            let validate = command(&h.validate);
            nodes.push(Node {
                description: format!("{} {}", h.action, h.unit),
                id: h.id,
                step: Box::new(HandlerStep {
                    action,
                    unit: h.unit,
                    validate,
                    wait_http: h.wait_http,
                }),
                after: h.after,
                notify: Vec::new(),
                handler: true,
                exclusive,
            });
        }
    }
    Ok(Graph {
        nodes,
        secrets,
        rendered,
        write_dirs,
    })
}

/// An argv from a playbook as a command; empty means none.
fn command(argv: &[String]) -> Option<Cmd> {
    let (program, args) = argv.split_first()?;
    Some(Cmd::new(program).args(args.iter().cloned()))
}

fn make_step(
    kind: Kind,
    config: &HostConfig,
    renderer: &Renderer,
    ctx: &minijinja::Value,
    dry_run: bool,
    rendered: &mut Vec<RenderedFile>,
) -> Result<Box<dyn Step>> {
    Ok(match kind {
        Kind::Preflight { ports, names } => Box::new(PreflightStep {
            server_name: config.server_name.clone(),
            names,
            ports,
            dry_run,
        }),
        Kind::Template {
            template,
            dest,
            owner,
            mode,
            sensitive,
            validate,
            item,
        } => {
            let owner = Owner::parse(&owner, &mode)?;
            let contents = match item {
                Some(item) => renderer.render(
                    &template,
                    &minijinja::context! { item => item, ..ctx.clone() },
                )?,
                None => renderer.render(&template, ctx)?,
            };
            let step = FileStep {
                path: dest.clone(),
                owner: owner.clone(),
                contents: Contents::Fixed(contents.clone().into_bytes()),
                sensitive,
                validate: command(&validate),
            };
            rendered.push(RenderedFile {
                template,
                dest,
                owner,
                contents,
            });
            Box::new(step)
        }
        Kind::Copy {
            src,
            dest,
            owner,
            mode,
            sensitive,
            validate,
        } => Box::new(FileStep {
            path: dest,
            owner: Owner::parse(&owner, &mode)?,
            contents: Contents::CopyOf(src),
            sensitive,
            validate: command(&validate),
        }),
        Kind::Dir { path, owner, mode } => Box::new(DirStep {
            path,
            owner: Owner::parse(&owner, &mode)?,
        }),
        Kind::Symlink {
            link,
            target,
            validate,
        } => Box::new(SymlinkStep {
            link,
            target,
            validate: command(&validate),
        }),
        Kind::Unlink { link, target } => Box::new(UnlinkStep { link, target }),
        Kind::WorkersPrune { keep, note } => Box::new(WorkersPruneStep {
            dir: crate::layout::SYNAPSE_WORKERS_DIR.into(),
            keep,
            note,
        }),
        Kind::Secret {
            name,
            path,
            owner,
            mode,
        } => Box::new(SecretStep {
            name,
            path,
            owner: Owner::parse(&owner, &mode)?,
        }),
        Kind::AptKeyring {
            url,
            fingerprint,
            dest,
        } => Box::new(AptKeyringStep {
            url,
            fingerprint,
            path: dest,
        }),
        Kind::Debconf { package, answers } => Box::new(DebconfStep {
            package,
            answers: answers.into_iter().map(|[q, t, v]| (q, t, v)).collect(),
        }),
        Kind::Packages {
            names,
            defer_start,
            require_candidate,
        } => Box::new(PackagesStep {
            names,
            defer_start,
            require_candidate,
        }),
        Kind::Postgres {
            role,
            database,
            password_secret,
        } => Box::new(PostgresStep {
            role,
            database,
            password_secret,
        }),
        Kind::Certificate { name } => Box::new(CertificateStep {
            name,
            acme: config.acme.enabled.then(|| Acme {
                email: config.acme.email.clone().unwrap_or_default(),
                directory_url: config.sources.acme_directory_url.clone(),
                ca_bundle: config.sources.acme_ca_bundle.clone(),
                webroot: layout::ACME_WEBROOT.into(),
            }),
        }),
        Kind::Service {
            unit,
            wait_http,
            instance,
            tls,
            probe,
            probe_expect,
        } => Box::new(ServiceStep {
            unit,
            wait_http,
            instance,
            probe: command(&probe).map(|cmd| (cmd, probe_expect.unwrap_or_default())),
            tls: tls
                .into_iter()
                .map(|t| Served {
                    name: t.name,
                    port: t.port,
                    cert: t.cert,
                })
                .collect(),
        }),
        Kind::Disabled { unit, only_if } => Box::new(DisabledStep { unit, only_if }),
        Kind::Element => Box::new(ElementStep::from_config(config)),
        Kind::SystemUser { name, home } => Box::new(SystemUserStep { name, home }),
        Kind::Firewall {
            allow,
            managed_ports,
        } => Box::new(FirewallStep {
            ssh_ports: config.firewall.ssh_ports.clone(),
            allow,
            managed_ports,
        }),
        Kind::CertificateUnused { name } => Box::new(UnusedCertificateStep { name }),
        Kind::Absent {
            path,
            prune_dir,
            only_managed,
        } => Box::new(AbsentStep {
            path,
            prune_dir,
            only_managed,
        }),
        // A feature's unit, stopped and disabled only while our drop-in (`marker`) says it is ours.
        Kind::UnitOff { unit, marker } => Box::new(DisabledStep {
            unit,
            only_if: Some(marker),
        }),
        Kind::Htpasswd {
            path,
            user,
            secret,
            owner,
            mode,
        } => Box::new(HtpasswdStep {
            path,
            user,
            secret,
            owner: Owner::parse(&owner, &mode)?,
        }),
        Kind::PostgresRole {
            role,
            member_of,
            present,
            marker,
        } => Box::new(PostgresRoleStep {
            role,
            member_of,
            present,
            marker,
        }),
        Kind::AdminUser { name } => Box::new(AdminUserStep {
            localpart: name,
            server_name: config.server_name.clone(),
            transport: Box::new(crate::admin::HttpTransport::loopback()),
        }),
        Kind::BackupRepository => Box::new(BackupRepoStep {
            backup: config.backup.clone(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string a playbook interpolates is escaped for TOML: values holding quotes, backslashes,
    /// `#`, newlines and control characters come out of the rendered playbook exactly as they went in,
    /// in every playbook (this bypasses validation on purpose: escaping must not depend on it).
    #[test]
    fn interpolated_strings_cannot_escape_their_toml_string() {
        let mut config = crate::config::parse(
            "server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n[synapse]\nadmin_user = \"admin\"\n",
            "t",
        )
        .unwrap();
        let hostile = "x\"#\\\" = 1\n[[step]]\u{1b}[2J\ttab";
        config.sources.matrix_keyring_url = format!("https://example.org/k.gpg{hostile}");
        config.sources.matrix_key_fingerprint = hostile.to_string();
        config.synapse.admin_user = Some(hostile.to_string());
        config.element.version = hostile.to_string();
        config.firewall.extra_allowed_ports = vec![hostile.to_string()];
        let inputs = Inputs {
            config_path: format!("/root/{hostile}.toml").into(),
            self_exe: format!("/opt/{hostile}").into(),
        };
        let release = crate::release::NEWEST;
        let facts = render::Facts {
            ram_mb: 4096,
            cpus: 2,
            sizing: crate::sizing::Sizing::of(4096, 2),
            release,
            addresses: vec!["127.0.0.1".into()],
            mounts: vec!["/".into()],
        };
        let ctx = RenderContext::new(config.clone(), facts, &inputs);
        let files = definitions(&Renderer::new(), &ctx).unwrap_or_else(|e| panic!("{e:#}"));
        let steps: Vec<&StepDef> = files.iter().flat_map(|f| &f.step).collect();
        let step = |id: &str| {
            &steps
                .iter()
                .find(|s| s.id == id)
                .unwrap_or_else(|| panic!("no step {id}"))
                .kind
        };
        match step("matrix-keyring") {
            Kind::AptKeyring {
                url, fingerprint, ..
            } => {
                assert_eq!(url, &config.sources.matrix_keyring_url);
                assert_eq!(fingerprint, hostile);
            }
            other => panic!("{other:?}"),
        }
        match step("admin-user") {
            Kind::AdminUser { name } => assert_eq!(name, hostile),
            other => panic!("{other:?}"),
        }
        match step("firewall") {
            Kind::Firewall { allow, .. } => assert_eq!(allow.last().unwrap(), hostile),
            other => panic!("{other:?}"),
        }
        let copies: Vec<&PathBuf> = steps
            .iter()
            .filter_map(|s| match &s.kind {
                Kind::Copy { src, .. } => Some(src),
                _ => None,
            })
            .collect();
        assert!(copies.contains(&&inputs.config_path), "{copies:?}");
        assert!(copies.contains(&&inputs.self_exe), "{copies:?}");
        // No step appeared out of a value.
        assert!(steps.iter().all(|s| !s.id.contains('\u{1b}')));
    }

    /// The graph a dry run builds on an empty fake host for a minimal host.toml plus `extra`.
    fn dry_run_graph(extra: &str) -> Graph {
        let config = crate::config::parse(
            &format!("server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n{extra}"),
            "t",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let inputs = Inputs {
            config_path: "/root/host.toml".into(),
            self_exe: "/usr/sbin/matrix-provision".into(),
        };
        build(&config, &inputs, &crate::system::FakeSystem::new(), true)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Whatever changes nginx's tree or runs `nginx -t` holds nginx's config lock, whether or not its
    /// playbook says so: the unlink of the other mode's vhosts (which raced another step's `nginx -t`),
    /// Debian's default site, the metrics snippet's removal, the reload handlers. Steps elsewhere don't.
    #[test]
    fn steps_touching_nginx_hold_its_config_lock() {
        let nodes = |extra: &str| -> Vec<(String, Vec<String>)> {
            dry_run_graph(extra)
                .nodes
                .into_iter()
                .map(|n| (n.id, n.exclusive))
                .collect()
        };
        let holds = |nodes: &[(String, Vec<String>)], id: &str| {
            let (_, ex) = nodes
                .iter()
                .find(|(i, _)| i == id)
                .unwrap_or_else(|| panic!("no node {id}"));
            ex.iter()
                .filter(|r| *r == layout::NGINX_CONFIG_LOCK)
                .count()
                == 1
        };
        let direct = nodes("");
        let proxied = nodes("[turn]\nenabled = false\n[edge]\nmode = \"proxied\"\n");
        for id in [
            "nginx-synapse-matrix-provision-edge-disabled",
            "nginx-debian-default-disabled",
            "nginx-default-vhost",
            "nginx-global-conf",
            "nginx-synapse-enabled",
            "metrics-ui-absent-1",
            "reload:nginx",
            "reload:nginx-http",
            "restart:nginx",
        ] {
            assert!(
                holds(&direct, id),
                "direct: {id} does not hold the nginx lock once"
            );
        }
        assert!(holds(&proxied, "nginx-synapse-matrix-provision-disabled"));
        assert!(holds(&proxied, "nginx-http-disabled"));
        for id in ["packages", "postgres-db", "coturn-conf", "nginx-hardening"] {
            assert!(!holds(&direct, id), "{id} holds the nginx lock");
        }
    }

    /// Behind an edge the graph has no certificate, certbot or port-80 step; it unlinks a direct host's
    /// port-80 vhost and retires its lineages instead. Direct mode has the opposite.
    #[test]
    fn the_edge_mode_decides_which_steps_exist() {
        let ids = |extra: &str| -> Vec<String> {
            dry_run_graph(&format!("[turn]\nenabled = false\n{extra}"))
                .nodes
                .into_iter()
                .map(|n| n.id)
                .collect()
        };
        let direct = ids("");
        let proxied = ids("[edge]\nmode = \"proxied\"\n");
        for id in [
            "nginx-http-enabled",
            "cert-matrix.example.com",
            "certbot-deploy-hook",
            "certbot-service-dropin",
        ] {
            assert!(direct.iter().any(|i| i == id), "direct lacks {id}");
            assert!(!proxied.iter().any(|i| i == id), "proxied has {id}");
        }
        for id in [
            "nginx-http-disabled",
            "cert-unused-matrix.example.com",
            "cert-unused-example.com",
        ] {
            assert!(proxied.iter().any(|i| i == id), "proxied lacks {id}");
            assert!(!direct.iter().any(|i| i == id), "direct has {id}");
        }
    }

    #[test]
    fn a_container_is_sized_from_its_cgroup_limit_not_the_hosts_ram() {
        let mut sys = crate::system::FakeSystem::new();
        sys.facts.ram_mb = 24105;
        sys.facts.cpus = 2;
        sys.put("/sys/fs/cgroup/memory.max", "2147483648\n");
        let f = facts(&sys);
        assert_eq!((f.ram_mb, f.cpus), (2048, 2));
        assert_eq!(f.sizing.host_ram_mb, 24105);
        assert_eq!(
            f.sizing.os_mb + f.sizing.postgres_mb + f.sizing.synapse_mb,
            2048
        );
    }

    #[test]
    fn toml_escape_round_trips() {
        for s in ["plain", "a\"b", "back\\slash", "nl\nx", "\u{7f}\u{1}", "#x"] {
            let doc = format!("v = \"{}\"", render::toml_escape(s));
            let parsed: toml::Value = toml::from_str(&doc).unwrap();
            assert_eq!(parsed["v"].as_str(), Some(s), "{doc}");
        }
    }
}
