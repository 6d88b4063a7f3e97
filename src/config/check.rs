//! Syntax checks for single host.toml values. Pure functions: each returns the accepted (possibly normalised)
//! value, or a [`Bad`] saying what is wrong and, when one can be derived, the corrected value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a value was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bad {
    pub message: String,
    /// A corrected value (plain text, not TOML-quoted) when the intent is clear, e.g. `example.com` for
    /// `https://Example.com/`.
    pub fix: Option<String>,
    /// What to do when no corrected value can be derived and an example value would mislead.
    pub advice: Option<String>,
    /// Shown instead of the written value, which must not be echoed (it holds a password).
    pub redacted: Option<String>,
}

fn bad(message: impl Into<String>, fix: Option<String>) -> Bad {
    Bad {
        message: message.into(),
        fix,
        advice: None,
        redacted: None,
    }
}

/// The host part of whatever was written: scheme, path, port and trailing dot dropped, lowercased.
fn salvage_domain(s: &str) -> String {
    let s = s.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.split(['/', '?', '#']).next().unwrap_or(s);
    let s = s.rsplit_once('@').map_or(s, |(_, host)| host);
    let s = match s.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => s,
    };
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// A DNS host name as Let's Encrypt and nginx need it: RFC 1123 labels, at least two of them, lowercase ASCII.
///
/// Uppercase is rejected rather than silently lowercased: the server_name ends up in every user ID and
/// cannot change later, so the file must say exactly what the server is called.
pub(super) fn domain(s: &str) -> Result<(), Bad> {
    let fix = || {
        let f = salvage_domain(s);
        (f != s && domain_syntax(&f).is_ok()).then_some(f)
    };
    if s.is_empty() {
        return Err(bad("must not be empty", None));
    }
    if s.chars().any(char::is_whitespace) {
        return Err(bad("must not contain spaces", fix()));
    }
    if s.contains("://") {
        return Err(bad("must be a bare host name, not a URL", fix()));
    }
    if s.contains(['/', '?', '#']) {
        return Err(bad("must be a bare host name without a path", fix()));
    }
    if s.contains('@') {
        return Err(bad("must be a host name, not an address", fix()));
    }
    if s.contains(':') {
        return Err(bad(
            format!(
                "must not contain a port (nginx serves {} and {} for it; federation finds the port itself)",
                crate::layout::HTTPS_PORT,
                crate::layout::FEDERATION_PORT
            ),
            fix(),
        ));
    }
    if s.ends_with('.') {
        return Err(bad("must not end with a dot", fix()));
    }
    if !s.is_ascii() {
        return Err(bad(
            "must be ASCII; write an internationalised name in its punycode (xn--) form",
            None,
        ));
    }
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad(
            "must be lowercase (it becomes part of user IDs and certificate names)",
            fix(),
        ));
    }
    domain_syntax(s)
}

fn domain_syntax(s: &str) -> Result<(), Bad> {
    if s.len() > 253 {
        return Err(bad(
            format!("is {} characters long; a DNS name has at most 253", s.len()),
            None,
        ));
    }
    let labels: Vec<&str> = s.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err(bad("has an empty label (two dots in a row?)", None));
        }
        if label.len() > 63 {
            return Err(bad(
                format!("label `{label}` is longer than 63 characters"),
                None,
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(bad(
                format!("contains `{c}`; a DNS label holds only a-z, 0-9 and `-`"),
                None,
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad(
                format!("label `{label}` starts or ends with `-`"),
                None,
            ));
        }
    }
    if s.parse::<Ipv4Addr>().is_ok() {
        return Err(bad(
            "is an IP address; Let's Encrypt and Matrix federation need a DNS name",
            None,
        ));
    }
    if labels.len() < 2 {
        return Err(bad(
            "must be a fully qualified name with at least one dot (Let's Encrypt issues no certificate for a single label)",
            None,
        ));
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad(
            "ends in an all-numeric label, which is no top-level domain",
            None,
        ));
    }
    Ok(())
}

/// A contact address for the ACME account: `local@domain`, domain a valid DNS name. The local part
/// holds only letters, digits and `. _ % + -` (what certbot and Let's Encrypt accept in practice) and
/// never starts with `-`: it is passed to certbot as an argument, which would read it as an option.
pub(super) fn email(s: &str) -> Result<(), Bad> {
    if let Some(rest) = s.strip_prefix("mailto:") {
        return Err(bad(
            "must be a bare address without `mailto:`",
            Some(rest.to_string()),
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "must not contain spaces or control characters",
            Some(s.trim().to_string()),
        ));
    }
    let Some((local, domain_part)) = s.rsplit_once('@') else {
        return Err(bad("is not an email address (no `@`)", None));
    };
    if s.starts_with('-') {
        return Err(bad(
            "must not start with `-` (certbot would read it as an option)",
            None,
        ));
    }
    if local.is_empty() || local.contains(['@', '<', '>', ',', ';', '"']) {
        return Err(bad("is not a single plain email address", None));
    }
    if let Some(c) = local
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._%+-".contains(*c)))
    {
        return Err(bad(
            format!(
                "contains `{c}`; the part before `@` may hold only letters, digits and . _ % + -"
            ),
            None,
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(bad("has a misplaced `.` before the `@`", None));
    }
    // Mail domains are case-insensitive; only the shape matters here.
    domain_syntax(&domain_part.to_ascii_lowercase()).map_err(|b| {
        bad(
            format!("has a bad domain part `{domain_part}`: {}", b.message),
            None,
        )
    })
}

/// RFC 3986's characters: unreserved, reserved and `%` (for percent-encoding).
fn url_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

/// An http(s) URL with a host. Credentials are refused: plan output and rendered files would show them.
/// Only RFC 3986's characters: anything else (a quote, `<`, `\\`, non-ASCII) must be percent-encoded.
pub(super) fn url(s: &str) -> Result<(), Bad> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "must not contain spaces or control characters",
            Some(s.trim().to_string()),
        ));
    }
    if let Some(c) = s.chars().find(|c| !url_char(*c)) {
        return Err(bad(
            format!("contains `{c}`, which a URL cannot hold; percent-encode it (`\"` is %22)"),
            None,
        ));
    }
    if let Some(i) = s.find('%').filter(|&i| {
        !s.get(i + 1..i + 3)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    }) {
        return Err(bad(
            format!("has a `%` at character {} that starts no %XX escape", i + 1),
            None,
        ));
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(bad(
            "must be an absolute http:// or https:// URL",
            (!s.is_empty()).then(|| format!("https://{s}")),
        ));
    };
    if scheme != "https" && scheme != "http" {
        return Err(bad(
            format!("has scheme `{scheme}`; only http:// and https:// are fetched"),
            None,
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if let Some((_, host)) = authority.rsplit_once('@') {
        let path = &rest[authority.len()..];
        return Err(Bad {
            message: "must not contain credentials (plan output and logs would show them); a private apt mirror takes them from /etc/apt/auth.conf.d".to_string(),
            fix: Some(format!("{scheme}://{host}{path}")),
            advice: None,
            redacted: Some(format!("\"{scheme}://[redacted]@{host}{path}\"")),
        });
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(bad("has an unclosed `[` in its host", None));
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(bad(
                format!("has `{addr}` in brackets, which is no IPv6 address"),
                None,
            ));
        }
        (addr, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("has no host", None));
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(bad(format!("has an invalid host `{host}`"), None));
    }
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return Err(bad(format!("has an invalid port `{port}`"), None));
        }
    }
    Ok(())
}

/// An apt repository URL: a [`url`] that also goes into the deb822 sources file as it is, so only
/// characters that are plain text there (no `'`, `;`, `$`, `(`, `*`, `!`, `?`, `&`, `#`).
pub(super) fn repo_url(s: &str) -> Result<(), Bad> {
    url(s)?;
    match s.chars().find(|c| !crate::render::plain_char(*c)) {
        Some(c) => Err(bad(
            format!("contains `{c}`, which is written into the apt sources file; use a plain repository URL"),
            None,
        )),
        None => Ok(()),
    }
}

/// An absolute path to a file on the host, normalised, of portable characters (letters, digits and
/// `. _ - + @ = , : ~`): it is passed to tools and may be written into config files.
pub(super) fn absolute_file(s: &str) -> Result<(), Bad> {
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(
            "must not contain spaces, newlines or control characters",
            None,
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-+@=,:~/".contains(*c)))
    {
        return Err(bad(
            format!("contains `{c}`; a path here may hold only letters, digits, / and . _ - + @ = , : ~"),
            None,
        ));
    }
    if s.split('/')
        .skip(1)
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        && !s.ends_with('/')
    {
        return Err(bad(
            "must be a normalised path (no `//`, `/./` or `/../`)",
            None,
        ));
    }
    if !s.starts_with('/') {
        let fix = s.strip_prefix("~/").map(|rest| format!("/root/{rest}"));
        return Err(bad(
            "must be an absolute path (apply runs as root from any directory, and `~` is not expanded)",
            fix,
        ));
    }
    if s.ends_with('/') {
        return Err(bad("must name a file, not a directory", None));
    }
    Ok(())
}

/// A restic repository (`-r`): an absolute path, or one of restic's backends by its prefix. It reaches
/// restic and the service unit as it is, so only plain characters; credentials belong in the
/// environment file (`/etc/matrix-provision/backup/restic.env`), never in host.toml.
pub(super) fn restic_repository(s: &str) -> Result<(), Bad> {
    const BACKENDS: &[&str] = &[
        "local:", "sftp:", "rest:", "s3:", "b2:", "azure:", "gs:", "swift:", "rclone:",
    ];
    if let Some(c) = s.chars().find(|c| !crate::render::plain_char(*c)) {
        return Err(bad(
            format!("contains `{c}`; a repository here may hold only letters, digits and . _ : / @ + = , % ~ - [ ]"),
            None,
        ));
    }
    if s.starts_with('/') {
        let path = s.trim_end_matches('/');
        return absolute_file(if path.is_empty() { "/" } else { path }).map_err(|mut b| {
            b.fix = None;
            b
        });
    }
    let Some(backend) = BACKENDS.iter().find(|b| s.starts_with(**b)) else {
        return Err(Bad {
            advice: Some(
                "write an absolute path (a mounted disk) or a restic repository such as \
                 \"sftp:user@host:/srv/restic/matrix\", \"rest:https://host:8000/matrix\", \"s3:s3.amazonaws.com/bucket/matrix\""
                    .to_string(),
            ),
            ..bad("is neither an absolute path nor a restic repository (local:, sftp:, rest:, s3:, b2:, azure:, gs:, swift:, rclone:)", None)
        });
    };
    let rest = &s[backend.len()..];
    if rest.is_empty() {
        return Err(bad(
            format!("names the `{backend}` backend but no location after it"),
            None,
        ));
    }
    // rest:https://user:password@host/ — a password in host.toml would be in every copy of it.
    if let Some((_, after)) = rest.split_once("://") {
        let authority = after.split('/').next().unwrap_or("");
        if authority.contains('@') {
            return Err(Bad {
                advice: Some(format!(
                    "write the URL without user and password, and put them in {} \
                     (RESTIC_REST_USERNAME=…, RESTIC_REST_PASSWORD=…)",
                    crate::layout::RESTIC_ENV
                )),
                redacted: Some(format!("\"{backend}…\"")),
                ..bad("holds credentials", None)
            });
        }
    }
    Ok(())
}

/// When the backup timer fires: `hourly`, `daily`, `weekly`, or `HH:MM` every day.
pub(super) fn backup_schedule(s: &str) -> Result<(), Bad> {
    if matches!(s, "hourly" | "daily" | "weekly") {
        return Ok(());
    }
    let time = s.split_once(':').and_then(|(h, m)| {
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && s.len() == 5).then_some((h, m))
    });
    match time {
        Some(_) => Ok(()),
        None => Err(Bad {
            advice: Some(
                "write schedule = \"daily\" (or \"hourly\", \"weekly\", \"03:30\")".to_string(),
            ),
            ..bad(
                "must be \"hourly\", \"daily\", \"weekly\" or a time of day as HH:MM (24 h)",
                None,
            )
        }),
    }
}

/// An OpenPGP v4 fingerprint. Spaces (as gpg prints it) and lowercase are accepted; the result is 40
/// uppercase hex digits without spaces, the form apt and gpgv compare against.
pub(super) fn fingerprint(s: &str) -> Result<String, Bad> {
    let compact: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let compact = compact.strip_prefix("0X").unwrap_or(&compact).to_string();
    if let Some(c) = compact.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(bad(
            format!("contains `{c}`; a fingerprint is hexadecimal digits only"),
            None,
        ));
    }
    if compact.len() != 40 {
        return Err(bad(
            format!(
                "has {} hex digits; a full OpenPGP fingerprint has 40 (short key IDs can be forged)",
                compact.len()
            ),
            None,
        ));
    }
    Ok(compact)
}

/// The public address coturn advertises for relays. Private, loopback and other non-routable addresses
/// are errors: clients outside would be told to send media to an address they cannot reach. Documentation
/// ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are accepted so examples and
/// tests can use them.
pub(super) fn external_ip(s: &str) -> Result<IpAddr, Bad> {
    let ip: IpAddr = s.parse().map_err(|_| {
        let trimmed = s.trim().trim_matches(['[', ']']);
        let fix = trimmed.parse::<IpAddr>().ok().map(|ip| ip.to_string());
        bad("is not an IPv4 or IPv6 address", fix)
    })?;
    let why = match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => non_public_v4(v4),
            None => non_public_v6(v6),
        },
    };
    match why {
        Some(why) => Err(Bad {
            message: format!("is {why}; external_ip must be the public address clients reach"),
            fix: None,
            redacted: None,
            advice: Some(
                "write the public address of the NAT router, or remove the line when the host holds its public address itself"
                    .to_string(),
            ),
        }),
        None => Ok(ip),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private (RFC 1918) address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a carrier-grade NAT (100.64.0.0/10) address")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("a multicast or reserved address")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a unique local (fc00::/7) address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

/// The address nginx listens on for the edge: an IP address of this host, loopback (the edge runs here)
/// or an internal one. The unspecified address is refused: plain HTTP would face every network.
/// Stored in canonical text form, IPv6 in brackets as nginx's `listen` wants it.
pub(super) fn listen_address(s: &str) -> Result<String, Bad> {
    let trimmed = s.trim().trim_matches(['[', ']']);
    let ip: IpAddr = s.parse().or_else(|_| {
        trimmed.parse().map_err(|_| {
            bad(
                "is not an IPv4 or IPv6 address (a port goes in edge.port)",
                trimmed
                    .rsplit_once(':')
                    .and_then(|(h, _)| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
                    .map(|ip| ip.to_string()),
            )
        })
    })?;
    if ip.is_unspecified() {
        return Err(Bad {
            message: "is the unspecified address: nginx would serve plain HTTP on every interface"
                .to_string(),
            fix: None,
            redacted: None,
            advice: Some(format!(
                "write {} when the edge runs on this host, else the internal address the edge reaches",
                crate::layout::LOOPBACK
            )),
        });
    }
    Ok(match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    })
}

/// An edge address nginx believes X-Forwarded-For from: an IP address or a CIDR range, never a range
/// that holds every address (then any client could say who it is). Canonical text form.
pub(super) fn trusted_address(s: &str) -> Result<String, Bad> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr.trim().parse().map_err(|_| {
        bad(
            "is not an IP address or a CIDR range such as \"10.0.0.0/24\"",
            None,
        )
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let Some(prefix) = prefix else {
        return Ok(ip.to_string());
    };
    match prefix.parse::<u8>() {
        Ok(0) => Err(Bad {
            message: "trusts every address: any client could forge its address in X-Forwarded-For"
                .to_string(),
            fix: None,
            redacted: None,
            advice: Some("list only the edge's own addresses".to_string()),
        }),
        Ok(p) if p <= max => Ok(format!("{ip}/{p}")),
        _ => Err(bad(
            format!("has prefix length `{prefix}`; it must be 1 to {max}"),
            None,
        )),
    }
}

/// Whether an address or range lies in loopback (traffic from it never crosses the firewall).
pub(super) fn is_loopback(s: &str) -> bool {
    let addr = s.split('/').next().unwrap_or(s).trim_matches(['[', ']']);
    addr.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PortSpec {
    pub low: u16,
    pub high: u16,
}

/// A firewall entry: `PORT/tcp`, `PORT/udp`, `LOW:HIGH/tcp` or `LOW:HIGH/udp` (ufw's syntax).
pub(super) fn port_spec(s: &str) -> Result<PortSpec, Bad> {
    let syntax = "must be \"PORT/tcp\", \"PORT/udp\", \"LOW:HIGH/tcp\" or \"LOW:HIGH/udp\"";
    let Some((ports, proto)) = s.split_once('/') else {
        let fix = port_range(s.trim())
            .ok()
            .map(|_| format!("{}/tcp", s.trim().replace('-', ":")));
        return Err(bad(format!("has no protocol; {syntax}"), fix));
    };
    if proto != "tcp" && proto != "udp" {
        let lower = proto.trim().to_ascii_lowercase();
        let fix = (lower == "tcp" || lower == "udp").then(|| format!("{ports}/{lower}"));
        return Err(bad(format!("has protocol `{proto}`; {syntax}"), fix));
    }
    let (low, high) = port_range(ports).map_err(|message| {
        let fix = (ports.contains('-') && port_range(&ports.replace('-', ":")).is_ok())
            .then(|| format!("{}/{proto}", ports.replace('-', ":")));
        bad(message, fix)
    })?;
    Ok(PortSpec { low, high })
}

fn port_range(s: &str) -> Result<(u16, u16), String> {
    let one = |p: &str| -> Result<u16, String> {
        match p.parse::<u32>() {
            Ok(n @ 1..=65535) => Ok(n as u16),
            Ok(n) => Err(format!("port {n} is out of range 1..65535")),
            Err(_) => Err(format!(
                "`{p}` is not a port number; write \"LOW:HIGH\" (colon) for a range"
            )),
        }
    };
    match s.split_once(':') {
        None => one(s).map(|p| (p, p)),
        Some((low, high)) => {
            let (low, high) = (one(low)?, one(high)?);
            if low >= high {
                return Err(format!(
                    "range {low}:{high} is empty or reversed; LOW must be below HIGH"
                ));
            }
            Ok((low, high))
        }
    }
}

/// A Matrix user ID localpart (spec: `[a-z0-9._=/+-]`), further restricted as Synapse's registration is:
/// no leading `_` (reserved for application services) and not all digits (reserved for guests).
pub(super) fn localpart(s: &str) -> Result<(), Bad> {
    if let Some(rest) = s.strip_prefix('@') {
        let local = rest.split(':').next().unwrap_or(rest);
        return Err(bad(
            "must be the localpart only, not a full user ID",
            localpart(local).is_ok().then(|| local.to_string()),
        ));
    }
    if s.is_empty() {
        return Err(bad(
            "must not be empty (remove the line to create no admin)",
            None,
        ));
    }
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        let lower = s.to_ascii_lowercase();
        return Err(bad(
            "must be lowercase",
            localpart(&lower).is_ok().then_some(lower),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._=/+-".contains(*c)))
    {
        return Err(bad(
            format!("contains `{c}`; a Matrix localpart holds only a-z, 0-9 and . _ = / + -"),
            None,
        ));
    }
    if s.starts_with('_') {
        return Err(bad(
            "must not start with `_` (reserved for bridges and bots)",
            None,
        ));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "must not be all digits (Synapse reserves those for guests)",
            None,
        ));
    }
    Ok(())
}

/// A Prometheus duration of one unit: digits, then ms, s, m, h, d or w (`30s`, `5m`, `26h`), not zero.
pub(super) fn prom_duration(s: &str) -> Result<(), Bad> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    if !n.is_empty()
        && n.bytes().any(|b| b != b'0')
        && ["ms", "s", "m", "h", "d", "w"].contains(&unit)
    {
        return Ok(());
    }
    let fix = s.trim().to_ascii_lowercase().replace(' ', "");
    Err(bad(
        "must be a duration like \"30s\", \"5m\" or \"26h\" (a number above 0, then ms, s, m, h, d or w)",
        Some(fix),
    ))
}

/// `latest` or an Element release tag: `vMAJOR.MINOR.PATCH`, optionally `-rc.N` (Element's spelling).
pub(super) fn element_version(s: &str) -> Result<(), Bad> {
    if s == "latest" || is_release_tag(s) {
        return Ok(());
    }
    let fix = if s.eq_ignore_ascii_case("latest") {
        Some("latest".to_string())
    } else {
        let v = format!("v{}", s.trim_start_matches(['v', 'V']));
        is_release_tag(&v).then_some(v)
    };
    Err(bad(
        "must be \"latest\" or a release tag like \"v1.11.85\" (or \"v1.11.86-rc.0\")",
        fix,
    ))
}

fn is_release_tag(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else {
        return false;
    };
    let (version, rc) = match rest.split_once('-') {
        Some((v, rc)) => (v, Some(rc)),
        None => (rest, None),
    };
    let number = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = version.split('.').collect();
    let rc_ok = match rc {
        None => true,
        Some(rc) => rc
            .strip_prefix("rc.")
            .or_else(|| rc.strip_prefix("rc"))
            .is_some_and(number),
    };
    parts.len() == 3 && parts.iter().all(|p| number(p)) && rc_ok
}

/// The candidate closest to `word` by edit distance, if close enough to be a plausible typo.
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev_diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (prev_diag + cost).min(row[j] + 1).min(row[j + 1] + 1);
            prev_diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        for ok in [
            "example.com",
            "matrix.example.com",
            "a-b.c0.example",
            "xn--bcher-kva.example",
        ] {
            assert_eq!(domain(ok), Ok(()), "{ok}");
        }
        let fix = |s: &str| domain(s).unwrap_err().fix;
        assert_eq!(fix("https://Example.com/"), Some("example.com".into()));
        assert_eq!(fix("example.com:8448"), Some("example.com".into()));
        assert_eq!(fix("example.com."), Some("example.com".into()));
        assert_eq!(fix("Example.COM"), Some("example.com".into()));
        for no in [
            "",
            "localhost",
            "-a.com",
            "a-.com",
            "a..com",
            "a_b.com",
            "10.0.0.1",
            "a.123",
            "bücher.de",
        ] {
            assert!(domain(no).is_err(), "{no}");
        }
        assert!(domain(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(email("admin@example.com"), Ok(()));
        assert_eq!(email("Admin+acme@Example.COM"), Ok(()));
        assert!(email("admin").is_err());
        assert!(email("admin@localhost").is_err());
        assert!(email("a b@example.com").is_err());
        assert_eq!(
            email("mailto:a@example.com").unwrap_err().fix,
            Some("a@example.com".into())
        );
    }

    #[test]
    fn urls() {
        for ok in [
            "https://a.example/x/",
            "http://127.0.0.1:8080/debian",
            "https://[::1]:14000/dir",
        ] {
            assert_eq!(url(ok), Ok(()), "{ok}");
        }
        for no in [
            "ftp://a.example/",
            "https://",
            "https:///path",
            "https://u:p@a.example/",
            "https://a.example:0/",
            "https://a b/",
        ] {
            assert!(url(no).is_err(), "{no}");
        }
        assert_eq!(
            url("a.example/debian").unwrap_err().fix,
            Some("https://a.example/debian".into())
        );
        // Characters outside URL syntax, and broken escapes: a quote once cut a playbook string short.
        for no in [
            "https://a.example/k.gpg\"#",
            "https://a.example/\u{1b}[2J",
            "https://a.example/a\\b",
            "https://a.example/ü",
            "https://a.example/<x>",
            "https://a.example/%zz",
            "https://a.example/%2",
        ] {
            assert!(url(no).is_err(), "{no:?}");
        }
        assert_eq!(url("https://a.example/a%20b?x=1&y=(2)"), Ok(()));
        assert!(repo_url("https://a.example/debian?x=1").is_err());
        assert_eq!(repo_url("http://[::1]:8080/debian/"), Ok(()));
    }

    #[test]
    fn emails_that_could_be_options_or_syntax() {
        for no in [
            "-oProxy@example.com",
            "--server@example.com",
            "a\"b@example.com",
            "a'b@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a\u{1b}@example.com",
        ] {
            assert!(email(no).is_err(), "{no:?}");
        }
        assert_eq!(email("ops.team+acme@example.com"), Ok(()));
    }

    #[test]
    fn paths_of_portable_characters_only() {
        assert_eq!(absolute_file("/etc/ssl/private-ca.pem"), Ok(()));
        for no in [
            "/etc/ssl/my ca.pem",
            "/etc/ssl/ca.pem\n",
            "/etc/\u{1b}x",
            "/etc/x;rm",
            "/etc/x\"y",
            "/etc/../shadow",
            "/etc//x",
            "/etc/$HOME",
        ] {
            assert!(absolute_file(no).is_err(), "{no:?}");
        }
    }

    #[test]
    fn fingerprints_normalise() {
        assert_eq!(
            fingerprint("aaf9 ae84 3a75 84b5 a3e4  cd2b cf45 a512 de2d a058"),
            Ok("AAF9AE843A7584B5A3E4CD2BCF45A512DE2DA058".into())
        );
        assert!(fingerprint("CF45A512DE2DA058").is_err());
        assert!(fingerprint("ZAF9AE843A7584B5A3E4CD2BCF45A512DE2DA058").is_err());
    }

    #[test]
    fn external_ips() {
        assert!(external_ip("203.0.113.7").is_ok());
        assert!(external_ip("2001:db8::7").is_ok());
        assert!(external_ip("8.8.8.8").is_ok());
        for no in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "100.64.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "example.com",
        ] {
            assert!(external_ip(no).is_err(), "{no}");
        }
    }

    #[test]
    fn port_specs() {
        assert_eq!(
            port_spec("8080/tcp"),
            Ok(PortSpec {
                low: 8080,
                high: 8080
            })
        );
        assert_eq!(
            port_spec("60000:61000/udp"),
            Ok(PortSpec {
                low: 60000,
                high: 61000
            })
        );
        assert_eq!(port_spec("8080").unwrap_err().fix, Some("8080/tcp".into()));
        assert_eq!(
            port_spec("10-20/udp").unwrap_err().fix,
            Some("10:20/udp".into())
        );
        assert_eq!(port_spec("53/UDP").unwrap_err().fix, Some("53/udp".into()));
        for no in [
            "0/tcp",
            "65536/tcp",
            "20:10/tcp",
            "5:5/udp",
            "x/tcp",
            "1/sctp",
            "/tcp",
        ] {
            assert!(port_spec(no).is_err(), "{no}");
        }
    }

    #[test]
    fn localparts() {
        assert_eq!(localpart("admin"), Ok(()));
        assert_eq!(localpart("ops.team-1"), Ok(()));
        assert_eq!(
            localpart("@admin:example.com").unwrap_err().fix,
            Some("admin".into())
        );
        assert_eq!(localpart("Admin").unwrap_err().fix, Some("admin".into()));
        for no in ["", "_bot", "1234", "al ice", "ali:ce"] {
            assert!(localpart(no).is_err(), "{no}");
        }
    }

    #[test]
    fn prometheus_durations() {
        for ok in ["30s", "5m", "26h", "7d", "500ms", "1w"] {
            assert_eq!(prom_duration(ok), Ok(()), "{ok}");
        }
        assert_eq!(prom_duration("5 M").unwrap_err().fix, Some("5m".into()));
        for no in ["", "0s", "5", "m", "1h30m", "-5m", "5min"] {
            assert!(prom_duration(no).is_err(), "{no}");
        }
    }

    #[test]
    fn element_versions() {
        for ok in ["latest", "v1.11.85", "v1.11.86-rc.0", "v1.11.86-rc2"] {
            assert_eq!(element_version(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            element_version("1.11.85").unwrap_err().fix,
            Some("v1.11.85".into())
        );
        assert_eq!(
            element_version("Latest").unwrap_err().fix,
            Some("latest".into())
        );
        for no in ["v1.11", "v1.11.x", "stable", "v1.11.85-beta"] {
            assert!(element_version(no).is_err(), "{no}");
        }
    }

    #[test]
    fn suggestions() {
        let keys = ["presence", "federation", "registration", "host"];
        assert_eq!(closest("presense", keys), Some("presence"));
        assert_eq!(closest("federaton", keys), Some("federation"));
        assert_eq!(closest("hots", keys), Some("host"));
        assert_eq!(closest("colour", keys), None);
    }
}
