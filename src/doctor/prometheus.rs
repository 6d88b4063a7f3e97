//! `[metrics]`: does Prometheus scrape every target, and which alerts fire? Asked of its HTTP API on
//! loopback (`/api/v1/targets`, `/api/v1/alerts`), the same answers its UI shows.

use serde_json::Value;

use super::{Check, Level};
use crate::system::System;

fn ui_hint(page: &str) -> String {
    let (addr, port) = (crate::layout::LOOPBACK, crate::layout::PROMETHEUS_PORT);
    format!("see them in the UI through an SSH tunnel: ssh -N -L {port}:{addr}:{port} root@<host>, then http://localhost:{port}/classic/{page}")
}

fn data(sys: &dyn System, url: &str) -> Result<Value, String> {
    let body = sys.http_get(url).map_err(|e| format!("{e:#}"))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON ({e})"))?;
    if v["status"] != "success" {
        return Err(format!("{url}: status {}", v["status"]));
    }
    Ok(v["data"].clone())
}

/// "synapse main", "node", …: the job, and the process for Synapse's targets.
fn target_name(t: &Value) -> String {
    let labels = &t["labels"];
    let job = labels["job"].as_str().unwrap_or("?");
    match labels["process"].as_str() {
        Some(p) => format!("{job} {p}"),
        None => job.to_string(),
    }
}

pub fn checks(sys: &dyn System, base: &str) -> Vec<Check> {
    let hint_down = "systemctl status prometheus; journalctl -u prometheus -n 50";
    let targets = match data(sys, &format!("{base}/api/v1/targets?state=active")) {
        Ok(d) => d,
        Err(e) => {
            return vec![Check::fail(
                "prometheus",
                format!("its API does not answer: {e}"),
                hint_down,
            )]
        }
    };
    let list = targets["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut up = Vec::new();
    let mut down = Vec::new();
    let mut unknown = Vec::new();
    for t in &list {
        let name = target_name(t);
        match t["health"].as_str() {
            Some("up") => up.push(name),
            Some("down") => down.push(format!(
                "{name} ({}: {})",
                t["scrapeUrl"].as_str().unwrap_or("?"),
                t["lastError"].as_str().unwrap_or("")
            )),
            _ => unknown.push(name),
        }
    }
    let mut out = vec![if list.is_empty() {
        Check::fail(
            "prometheus targets",
            "no targets",
            "run `matrix-provision apply host.toml`",
        )
    } else if !down.is_empty() {
        Check::fail(
            "prometheus targets",
            format!("{} of {} down: {}", down.len(), list.len(), down.join("; ")),
            format!(
                "systemctl status for the unit behind each; {}",
                ui_hint("targets")
            ),
        )
    } else if !unknown.is_empty() {
        Check::bad(
            Level::Warn,
            "prometheus targets",
            format!("not scraped yet: {}", unknown.join(", ")),
            "wait one scrape interval and run doctor again",
        )
    } else {
        Check::ok(
            "prometheus targets",
            format!("all {} up: {}", up.len(), up.join(", ")),
        )
    }];

    let alerts = match data(sys, &format!("{base}/api/v1/alerts")) {
        Ok(d) => d,
        Err(e) => {
            out.push(Check::fail("prometheus alerts", e, hint_down));
            return out;
        }
    };
    let describe = |a: &Value| {
        let l = &a["labels"];
        let mut s = l["alertname"].as_str().unwrap_or("?").to_string();
        let detail: Vec<String> = ["process", "name", "mountpoint", "instance"]
            .iter()
            .filter_map(|k| l[*k].as_str().map(|v| format!("{k}={v}")))
            .take(1)
            .collect();
        if !detail.is_empty() {
            s.push_str(&format!(" ({})", detail.join(", ")));
        }
        if let Some(summary) = a["annotations"]["summary"].as_str() {
            s.push_str(&format!(": {summary}"));
        }
        s
    };
    let all = alerts["alerts"].as_array().cloned().unwrap_or_default();
    let firing: Vec<String> = all
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(describe)
        .collect();
    let pending: Vec<String> = all
        .iter()
        .filter(|a| a["state"] == "pending")
        .map(describe)
        .collect();
    out.push(if !firing.is_empty() {
        Check::fail(
            "prometheus alerts",
            format!("firing: {}", firing.join("; ")),
            ui_hint("alerts"),
        )
    } else if !pending.is_empty() {
        Check::bad(
            Level::Warn,
            "prometheus alerts",
            format!("none firing; pending: {}", pending.join("; ")),
            ui_hint("alerts"),
        )
    } else {
        Check::ok("prometheus alerts", "none firing")
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::FakeSystem;

    fn serve(sys: &FakeSystem, path: &str, body: &str) {
        sys.urls.lock().unwrap().insert(
            format!("http://127.0.0.1:9090{path}"),
            body.as_bytes().to_vec(),
        );
    }

    #[test]
    fn all_up_and_quiet_is_ok() {
        let sys = FakeSystem::new();
        serve(
            &sys,
            "/api/v1/targets?state=active",
            r#"{"status":"success","data":{"activeTargets":[
            {"labels":{"job":"synapse","process":"main"},"health":"up"},{"labels":{"job":"node"},"health":"up"}]}}"#,
        );
        serve(
            &sys,
            "/api/v1/alerts",
            r#"{"status":"success","data":{"alerts":[]}}"#,
        );
        let c = checks(&sys, "http://127.0.0.1:9090");
        assert_eq!(c[0].level, Level::Ok, "{c:?}");
        assert_eq!(c[0].detail, "all 2 up: synapse main, node");
        assert_eq!(c[1].level, Level::Ok);
    }

    #[test]
    fn a_down_target_and_a_firing_alert_fail_naming_them() {
        let sys = FakeSystem::new();
        serve(
            &sys,
            "/api/v1/targets?state=active",
            r#"{"status":"success","data":{"activeTargets":[
            {"labels":{"job":"synapse","process":"main"},"health":"down","scrapeUrl":"http://127.0.0.1:9000/_synapse/metrics","lastError":"connection refused"},
            {"labels":{"job":"node"},"health":"up"}]}}"#,
        );
        serve(
            &sys,
            "/api/v1/alerts",
            r#"{"status":"success","data":{"alerts":[
            {"labels":{"alertname":"SynapseDown","process":"main"},"annotations":{"summary":"Synapse process main is down"},"state":"firing"},
            {"labels":{"alertname":"DiskFillingUp","mountpoint":"/"},"state":"pending"}]}}"#,
        );
        let c = checks(&sys, "http://127.0.0.1:9090");
        assert_eq!(c[0].level, Level::Fail);
        assert!(
            c[0].detail.contains("synapse main") && c[0].detail.contains("connection refused"),
            "{c:?}"
        );
        assert_eq!(c[1].level, Level::Fail);
        assert_eq!(
            c[1].detail,
            "firing: SynapseDown (process=main): Synapse process main is down"
        );
    }

    #[test]
    fn no_answer_is_a_failure_with_a_hint() {
        let sys = FakeSystem::new();
        let c = checks(&sys, "http://127.0.0.1:9090");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].level, Level::Fail);
        assert!(c[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("systemctl status prometheus"));
    }
}
