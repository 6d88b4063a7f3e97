//! Issue 9 through the real playbooks: each vhost waits only for its own certificate, renewals through
//! certbot.service trust the same CA as apply, and the deploy hook serves every consumer independently.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use matrix_provision::config;
use matrix_provision::playbook::{self, Graph, Inputs};
use matrix_provision::system::FakeSystem;

fn graph(extra: &str) -> Graph {
    let text = format!(
        "server_name = \"example.org\"\n[acme]\nemail = \"a@example.org\"\n[synapse]\nhost = \"matrix.example.org\"\n\
         [element]\nhost = \"element.example.org\"\n[turn]\nhost = \"turn.example.org\"\n{extra}"
    );
    let config = config::parse(&text, "host.toml").unwrap_or_else(|e| panic!("{e}"));
    let sys = FakeSystem::new();
    sys.on_cmd("sshd -T", 0, "port 22\n");
    let inputs = Inputs {
        config_path: "/root/host.toml".into(),
        self_exe: "/usr/local/bin/matrix-provision".into(),
    };
    playbook::build(&config, &inputs, &sys, true).unwrap_or_else(|e| panic!("{e:#}"))
}

fn rendered(g: &Graph, dest: &str) -> String {
    g.rendered
        .iter()
        .find(|f| f.dest == Path::new(dest))
        .unwrap_or_else(|| panic!("{dest} is not rendered"))
        .contents
        .clone()
}

#[test]
fn each_vhost_is_enabled_after_its_own_certificate_only() {
    let g = graph("");
    let after = |id: &str| {
        let n = g.nodes.iter().find(|n| n.id == id).unwrap();
        n.after
            .iter()
            .filter(|a| a.starts_with("cert-"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        after("nginx-synapse-enabled"),
        vec!["cert-matrix.example.org"]
    );
    assert_eq!(after("nginx-wellknown-enabled"), vec!["cert-example.org"]);
    assert_eq!(
        after("nginx-element-enabled"),
        vec!["cert-element.example.org"]
    );
}

#[test]
fn renewals_trust_the_ca_bundle_apply_used() {
    let dropin = "/etc/systemd/system/certbot.service.d/matrix-provision.conf";
    let g = graph("[sources]\nacme_directory_url = \"https://localhost:14000/dir\"\nacme_ca_bundle = \"/srv/ca.pem\"\n");
    let text = rendered(&g, dropin);
    assert!(
        text.contains("[Service]\nEnvironment=\"REQUESTS_CA_BUNDLE=/srv/ca.pem\"\n"),
        "{text}"
    );
    let node = g
        .nodes
        .iter()
        .find(|n| n.id == "certbot-service-dropin")
        .unwrap();
    assert_eq!(node.notify, vec!["systemd:daemon-reload"]);
    // Without a private CA the drop-in sets nothing, so certbot keeps the system's CA store.
    let plain = rendered(&graph(""), dropin);
    assert!(!plain.contains("Environment"), "{plain}");
}

/// Run the rendered deploy hook with stub `install`, `systemctl` and `nginx` that log their arguments;
/// `install` fails when `fail_install`. Returns (exit status, log).
fn run_hook(fail_install: bool, nginx_ok: bool) -> (i32, String) {
    let g = graph("");
    let hook = rendered(&g, "/etc/letsencrypt/renewal-hooks/deploy/matrix-provision");
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("log");
    let stub = |name: &str, status: i32| {
        let p = bin.join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit {status}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    stub("install", i32::from(fail_install));
    stub("systemctl", 0);
    stub("nginx", if nginx_ok { 0 } else { 1 });
    let script = dir.path().join("hook");
    std::fs::write(&script, hook).unwrap();
    let status = std::process::Command::new("/bin/sh")
        .arg(&script)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("RENEWED_DOMAINS", "turn.example.org")
        .env("RENEWED_LINEAGE", "/etc/letsencrypt/live/turn.example.org")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn deploy_hook_reloads_nginx_even_when_the_coturn_copy_fails() {
    let (status, log) = run_hook(true, true);
    assert!(log.contains("systemctl reload nginx.service"), "{log}");
    assert!(!log.contains("try-restart coturn"), "{log}");
    assert_ne!(status, 0, "a failed consumer still fails the hook");
}

#[test]
fn deploy_hook_restarts_coturn_even_when_nginx_rejects_its_config() {
    let (status, log) = run_hook(false, false);
    assert!(
        log.contains("systemctl try-restart coturn.service"),
        "{log}"
    );
    assert!(!log.contains("reload nginx"), "{log}");
    assert_ne!(status, 0);
    assert_eq!(run_hook(false, true).0, 0, "all consumers served: exit 0");
}

#[test]
fn temp_files_a_killed_run_left_are_swept_where_we_write() {
    let text = "server_name = \"example.org\"\n[acme]\nemail = \"a@example.org\"\n";
    let config = config::parse(text, "host.toml").unwrap_or_else(|e| panic!("{e}"));
    let sys = FakeSystem::new();
    sys.on_cmd("sshd -T", 0, "port 22\n");
    // What a run killed between chmod and rename leaves: an executable in certbot's hook directory.
    let hook_tmp = "/etc/letsencrypt/renewal-hooks/deploy/.matrix-provision.mp-tmp-AbCd1234";
    sys.put(hook_tmp, "#!/bin/sh\n");
    sys.put(
        "/etc/nginx/sites-enabled/.matrix-provision-http.conf.mp-tmp",
        "",
    );
    sys.put(
        "/etc/letsencrypt/renewal-hooks/deploy/admins-own-hook",
        "#!/bin/sh\n",
    );
    let inputs = Inputs {
        config_path: "/root/host.toml".into(),
        self_exe: "/usr/local/bin/matrix-provision".into(),
    };
    let g = playbook::build(&config, &inputs, &sys, false).unwrap();
    let removed = g.sweep_leftovers(&sys).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(sys.get(hook_tmp).is_none());
    assert!(sys
        .get("/etc/letsencrypt/renewal-hooks/deploy/admins-own-hook")
        .is_some());
}

#[test]
fn the_admin_password_and_token_are_redacted_like_every_secret() {
    let text = "server_name = \"example.org\"\n[acme]\nemail = \"a@example.org\"\n[synapse]\nadmin_user = \"admin\"\n";
    let config = config::parse(text, "host.toml").unwrap_or_else(|e| panic!("{e}"));
    let sys = FakeSystem::new();
    sys.on_cmd("sshd -T", 0, "port 22\n");
    sys.put(
        "/var/lib/matrix-provision/admin.json",
        r#"{"user_id":"@admin:example.org","password":"Adm1nPassw0rd","access_token":"syt_YWRtaW4_token"}"#,
    );
    let inputs = Inputs {
        config_path: "/root/host.toml".into(),
        self_exe: "/usr/local/bin/matrix-provision".into(),
    };
    let g = playbook::build(&config, &inputs, &sys, true).unwrap();
    let line = "login Adm1nPassw0rd failed; Authorization: Bearer syt_YWRtaW4_token";
    assert_eq!(
        g.secrets.redact(line),
        "login [redacted] failed; Authorization: Bearer [redacted]"
    );
    assert!(g.secrets.appears_in("password: Adm1nPassw0rd\n"));
}
