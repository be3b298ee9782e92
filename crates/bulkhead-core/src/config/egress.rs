//! `[egress]`: where outbound requests may go besides public `https://`
//! addresses, parsed into rules `bulkhead-egress` enforces.

use std::net::SocketAddr;

use serde::Deserialize;

use super::error::Errors;

/// `[egress]`: where outbound requests a tenant can aim (OAuth2 token
/// URLs, tools) may go besides public `https://` addresses. Enforced by
/// `bulkhead-egress` on every resolved address and redirect hop.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Whether plain `http://` URLs may be reached (default false: a
    /// credential must not cross the network in clear).
    #[serde(default)]
    pub allow_http: bool,
    /// Exceptions to "public addresses only", each one of: a network in
    /// CIDR form (`"10.0.0.0/8"`, any port), an address and port written
    /// literally in the URL (`"127.0.0.1:8089"`, `"[fd00::5]:443"`), or a
    /// host name and port (`"jira.internal:443"`, whatever it resolves
    /// to). Empty by default.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// `allow_hosts` parsed, in order; filled in by [`load`](super::load).
    #[serde(skip)]
    pub rules: Vec<EgressRule>,
}

/// One parsed `[egress] allow_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressRule {
    /// Every address of a network, on any port, however it is reached.
    Net(ipnet::IpNet),
    /// One address and port, when a URL names that address literally (the
    /// resolver does not see the port, so a name resolving to it is not
    /// covered: allow the name instead).
    Addr(SocketAddr),
    /// One host name (lower case, no trailing dot) and port, whatever
    /// addresses it resolves to.
    Host {
        /// The name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl EgressRule {
    /// Parses one `allow_hosts` entry; the error says which forms exist.
    pub fn parse(s: &str) -> Result<Self, String> {
        const FORMS: &str = "write a network (\"10.0.0.0/8\"), an address:port (\"10.0.0.5:8089\", \"[fd00::5]:443\") or a host:port (\"jira.internal:443\")";
        if s.contains('/') {
            let net: ipnet::IpNet = s
                .parse()
                .map_err(|_| format!("{s:?} is not a network in CIDR form; {FORMS}"))?;
            if net.trunc() != net {
                return Err(format!(
                    "{s:?} has bits set past its prefix; did you mean \"{}\"?",
                    net.trunc()
                ));
            }
            return Ok(Self::Net(net));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(format!("{s:?}: the port must be 1-65535"));
            }
            return Ok(Self::Addr(addr));
        }
        if s.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!("{s:?} has no port; {FORMS}"));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("{s:?} has no port; {FORMS}"));
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{s:?}: the port must be 1-65535")),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        // A URL parser reads a name whose last label is a number as an
        // IPv4 address (`0x7f.1`), so such a rule could never match a name.
        let last = host.rsplit('.').next().unwrap_or_default();
        let numeric_tail = !last.is_empty()
            && (last.bytes().all(|b| b.is_ascii_digit())
                || last
                    .strip_prefix("0x")
                    .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) || numeric_tail {
            return Err(format!("{s:?} is not a host name and port; {FORMS}"));
        }
        Ok(Self::Host { host, port })
    }
}

/// `[egress]`: parses `allow_hosts` into `rules`, naming each bad entry.
pub(super) fn validate(egress: &mut EgressConfig, errors: &mut Errors) {
    egress.rules.clear();
    for (i, entry) in egress.allow_hosts.iter().enumerate() {
        match EgressRule::parse(entry) {
            Ok(rule) => egress.rules.push(rule),
            Err(e) => errors.push(format!("egress.allow_hosts[{i}]"), e),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{check, env};
    use crate::config::*;

    #[test]
    fn egress_rules_parse_each_form_and_name_the_bad_entry() {
        let c = load(
            "[egress]\nallow_http = true\nallow_hosts = [\"10.0.0.0/8\", \"127.0.0.1:8089\", \"[fd00::5]:443\", \"Jira.Internal.:443\"]\n",
            &env,
        )
        .unwrap();
        assert!(c.egress.allow_http);
        assert_eq!(
            c.egress.rules,
            vec![
                EgressRule::Net("10.0.0.0/8".parse().unwrap()),
                EgressRule::Addr("127.0.0.1:8089".parse().unwrap()),
                EgressRule::Addr("[fd00::5]:443".parse().unwrap()),
                EgressRule::Host {
                    host: "jira.internal".into(),
                    port: 443
                },
            ]
        );
        let d = load("", &env).unwrap();
        assert!(!d.egress.allow_http && d.egress.rules.is_empty());
        check(
            "[egress]\nallow_hosts = [\"10.0.0.1/8\", \"10.0.0.1\", \"jira\", \"jira:0\", \"a b:80\", \"0x7f.1:80\", \"10.0.0.0/33\", \"ok.example:443\"]\n",
            &[
                "egress.allow_hosts[0]: \"10.0.0.1/8\" has bits set past its prefix; did you mean \"10.0.0.0/8\"",
                "egress.allow_hosts[1]: \"10.0.0.1\" has no port",
                "egress.allow_hosts[2]: \"jira\" has no port",
                "egress.allow_hosts[3]: \"jira:0\": the port must be 1-65535",
                "egress.allow_hosts[4]: \"a b:80\" is not a host name",
                "egress.allow_hosts[5]: \"0x7f.1:80\" is not a host name",
                "egress.allow_hosts[6]: \"10.0.0.0/33\" is not a network",
            ],
        );
    }
}
