//! The egress guard: the one gate for outbound requests whose destination
//! a tenant can aim — OAuth2 token URLs, http tools and connectors, and
//! whatever else later takes a URL from a tenant or a model.
//!
//! An [`Egress`] is built once from `[egress]`. It hands out
//! [`GuardedClient`]s, reqwest clients that
//!
//! - refuse any scheme but `https` (and `http` when `allow_http`);
//! - check a URL that names an address literally before sending (reqwest
//!   does not call a resolver for IP literals);
//! - resolve names through a resolver that checks *every* resolved
//!   address and hands reqwest only the addresses it checked, so the
//!   connection goes to a vetted address (no second lookup a DNS answer
//!   could change between check and connect);
//! - check every redirect hop the same way, or follow none;
//! - ignore proxy settings from the environment (a proxy would resolve
//!   and connect on the guard's behalf).
//!
//! An address is allowed when it is public ([`ip::classify`]) or the
//! operator allowed it: a network (any port), an address:port named
//! literally, or a host name:port (whatever it resolves to).
//!
//! Refusals are [`EgressError`]s with one stable code, `egress_refused`;
//! [`Egress::refusal`] finds one inside a `reqwest::Error`.

pub mod ip;

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_core::config::{EgressConfig, EgressRule};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect::Policy;

pub use ip::Reason;

/// Why the guard refused a destination. Messages name the host and the
/// kind of address, never a body, credential or the rest of the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// Not a URL at all.
    #[error("not a valid URL")]
    InvalidUrl,
    /// A scheme the guard does not allow.
    #[error(
        "{scheme}:// URLs are not allowed{}",
        if scheme == "http" { " (only https://, unless the operator sets [egress] allow_http)" } else { " (only https://)" }
    )]
    Scheme {
        /// The URL's scheme.
        scheme: String,
    },
    /// The URL has no host.
    #[error("the URL has no host")]
    NoHost,
    /// The host is, or resolves to, an address outbound requests may not
    /// reach.
    #[error("{}", address_message(host, addr, reason))]
    Address {
        /// The host as written in the URL.
        host: String,
        /// The refused address.
        addr: IpAddr,
        /// What kind of address it is.
        reason: Reason,
    },
    /// The host is allowed on other ports only.
    #[error("{host} is allowed on other ports than {port}")]
    Port {
        /// The host name.
        host: String,
        /// The refused port.
        port: u16,
    },
    /// The name resolved to no address.
    #[error("{host} did not resolve to any address")]
    Unresolved {
        /// The host name.
        host: String,
    },
    /// More redirect hops than the client follows.
    #[error("too many redirects")]
    TooManyRedirects,
}

/// "10.0.0.5 is a private address, …" or "jira.example resolves to
/// 10.0.0.5, a private address, …".
fn address_message(host: &str, addr: &IpAddr, reason: &Reason) -> String {
    let tail = "which outbound requests may not reach";
    if host == addr.to_string() {
        format!("{addr} is a {reason} address, {tail}")
    } else {
        format!("{host} resolves to {addr}, a {reason} address, {tail}")
    }
}

impl EgressError {
    /// The stable code of every refusal.
    pub const CODE: &'static str = bulkhead_core::codes::EGRESS_REFUSED.code;

    /// The stable code.
    pub fn code(&self) -> &'static str {
        Self::CODE
    }
}

/// What the operator allowed besides public https.
#[derive(Debug, Default)]
struct Rules {
    allow_http: bool,
    nets: Vec<ipnet::IpNet>,
    addrs: Vec<SocketAddr>,
    hosts: Vec<(String, u16)>,
}

/// A name as the rules compare it: lower case, no trailing dot.
fn normal(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Rules {
    fn host_named(&self, host: &str) -> bool {
        self.hosts.iter().any(|(h, _)| h == host)
    }

    /// Whether `ip` may be reached: public, in an allowed network, named
    /// literally with an allowed port, or reached through an allowed name.
    fn check_ip(&self, host: &str, ip: IpAddr, port: Option<u16>) -> Result<(), EgressError> {
        let Some(reason) = ip::classify(ip) else {
            return Ok(());
        };
        let canonical = ip.to_canonical();
        let allowed = self
            .nets
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&canonical))
            || port.is_some_and(|p| {
                self.addrs
                    .iter()
                    .any(|a| a.port() == p && (a.ip() == ip || a.ip() == canonical))
            })
            || self.host_named(host);
        if allowed {
            Ok(())
        } else {
            Err(EgressError::Address {
                host: host.to_owned(),
                addr: ip,
                reason,
            })
        }
    }

    /// What can be decided from the URL alone: the scheme, a literal
    /// address, and the port of a name the operator allowed.
    fn check_scheme(&self, scheme: &str) -> Result<(), EgressError> {
        match scheme {
            "https" => Ok(()),
            "http" if self.allow_http => Ok(()),
            scheme => Err(EgressError::Scheme {
                scheme: scheme.to_owned(),
            }),
        }
    }

    fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        self.check_scheme(url.scheme())?;
        let port = url.port_or_known_default();
        match url.host() {
            None => Err(EgressError::NoHost),
            Some(url::Host::Ipv4(v4)) => self.check_ip(&v4.to_string(), IpAddr::V4(v4), port),
            Some(url::Host::Ipv6(v6)) => self.check_ip(&v6.to_string(), IpAddr::V6(v6), port),
            Some(url::Host::Domain(d)) => {
                let host = normal(d);
                // The resolver lets an allowed name reach any address but
                // cannot see the port: the port is checked here.
                match port {
                    Some(p)
                        if self.host_named(&host) && !self.hosts.contains(&(host.clone(), p)) =>
                    {
                        Err(EgressError::Port { host, port: p })
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    fn check_resolved(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), EgressError> {
        if addrs.is_empty() {
            return Err(EgressError::Unresolved {
                host: host.to_owned(),
            });
        }
        // Every address, not just the first: a client may try any of them.
        for a in addrs {
            self.check_ip(host, a.ip(), None)?;
        }
        Ok(())
    }
}

/// The longest [`Egress::vet`] waits for a name's addresses.
const VET_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The guard, built once from `[egress]` and shared (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Egress {
    rules: Arc<Rules>,
}

/// Whether a client follows redirects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// Follows none: a 3xx is the answer.
    None,
    /// Follows up to this many hops, each checked like the first URL.
    Checked(usize),
}

/// How a guarded client is built; everything else is the guard's.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Whole-request timeout.
    pub timeout: Option<Duration>,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Option<Duration>,
    /// The redirect policy.
    pub redirects: Redirects,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: None,
            pool_idle_timeout: None,
            redirects: Redirects::None,
        }
    }
}

struct GuardedResolver {
    rules: Arc<Rules>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let rules = self.rules.clone();
        let host = normal(name.as_str());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            rules.check_resolved(&host, &addrs)?;
            // reqwest connects to exactly these addresses (the URL's port
            // replaces the 0): what was checked is what is reached.
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

impl Egress {
    /// The guard for `config` (load it with `config::load`, which parses
    /// the rules).
    pub fn new(config: &EgressConfig) -> Self {
        let mut rules = Rules {
            allow_http: config.allow_http,
            ..Rules::default()
        };
        for rule in &config.rules {
            match rule {
                EgressRule::Net(n) => rules.nets.push(*n),
                EgressRule::Addr(a) => rules.addrs.push(*a),
                EgressRule::Host { host, port } => rules.hosts.push((normal(host), *port)),
            }
        }
        Self {
            rules: Arc::new(rules),
        }
    }

    /// The default guard: public https only.
    pub fn public_https_only() -> Self {
        Self::default()
    }

    /// What the URL alone decides (scheme, literal addresses, ports of
    /// allowed names); a name's addresses are checked when it resolves.
    pub fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        self.rules.check_url(url)
    }

    /// Whether URLs of `scheme` (`"https"`, `"http"`, …) may be reached.
    pub fn check_scheme(&self, scheme: &str) -> Result<(), EgressError> {
        self.rules.check_scheme(scheme)
    }

    /// Parses and checks a URL as [`check_url`](Self::check_url) does.
    pub fn check_str(&self, url: &str) -> Result<Url, EgressError> {
        let url = Url::parse(url).map_err(|_| EgressError::InvalidUrl)?;
        self.check_url(&url)?;
        Ok(url)
    }

    /// An early check, for input that will be used later (a stored
    /// credential's token URL): [`check_str`](Self::check_str), then the
    /// name's current addresses. A name that does not resolve now (or not
    /// within 5 s) passes (it may later); every request checks again.
    pub async fn vet(&self, url: &str) -> Result<Url, EgressError> {
        let url = self.check_str(url)?;
        if let Some(url::Host::Domain(d)) = url.host() {
            let host = normal(d);
            let lookup = tokio::net::lookup_host((host.as_str(), 0));
            // A slow resolver delays the caller's request (a PUT) at most
            // this long; the request-time check does not depend on it.
            if let Ok(Ok(addrs)) = tokio::time::timeout(VET_LOOKUP_TIMEOUT, lookup).await {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if !addrs.is_empty() {
                    self.rules.check_resolved(&host, &addrs)?;
                }
            }
        }
        Ok(url)
    }

    /// A client whose every request and redirect hop is checked. The
    /// builder is the guard's own, so nothing can add a proxy or a DNS
    /// override that would bypass it.
    pub fn client(&self, options: ClientOptions) -> Result<GuardedClient, reqwest::Error> {
        // reqwest is built without a default TLS crypto provider; ring is
        // the workspace's. A second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                rules: self.rules.clone(),
            }))
            .redirect(match options.redirects {
                Redirects::None => Policy::none(),
                Redirects::Checked(max) => {
                    let rules = self.rules.clone();
                    Policy::custom(move |attempt| {
                        if attempt.previous().len() > max {
                            return attempt.error(EgressError::TooManyRedirects);
                        }
                        match rules.check_url(attempt.url()) {
                            Ok(()) => attempt.follow(),
                            Err(e) => attempt.error(e),
                        }
                    })
                }
            });
        if let Some(t) = options.timeout {
            builder = builder.timeout(t);
        }
        if let Some(t) = options.pool_idle_timeout {
            builder = builder.pool_idle_timeout(t);
        }
        Ok(GuardedClient {
            client: builder.build()?,
            egress: self.clone(),
        })
    }

    /// The guard's refusal inside a failed request, if that is why it
    /// failed.
    pub fn refusal(error: &reqwest::Error) -> Option<&EgressError> {
        let mut source: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(refusal) = e.downcast_ref::<EgressError>() {
                return Some(refusal);
            }
            source = e.source();
        }
        None
    }
}

/// A reqwest client behind the guard. Requests are made only through
/// [`request`](Self::request), which checks the URL first.
#[derive(Debug, Clone)]
pub struct GuardedClient {
    client: reqwest::Client,
    egress: Egress,
}

impl GuardedClient {
    /// A request to `url`, if the guard allows its scheme and literal
    /// address; its name's addresses are checked when it connects.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: Url,
    ) -> Result<reqwest::RequestBuilder, EgressError> {
        self.egress.check_url(&url)?;
        Ok(self.client.request(method, url))
    }

    /// [`request`](Self::request) with a URL still to parse.
    pub fn request_str(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, EgressError> {
        let url = self.egress.check_str(url)?;
        Ok(self.client.request(method, url))
    }

    /// The guard the client checks with.
    pub fn egress(&self) -> &Egress {
        &self.egress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(url: &str) -> Option<Reason> {
        match Egress::public_https_only().check_str(url) {
            Ok(_) => None,
            Err(EgressError::Address { reason, .. }) => Some(reason),
            Err(e) => panic!("{url}: {e:?}"),
        }
    }

    #[test]
    fn every_spelling_the_url_parser_accepts_is_judged_as_the_address() {
        for (url, want) in [
            ("https://2130706433/", Reason::Loopback),
            ("https://0177.0.0.1/", Reason::Loopback),
            ("https://0x7f.0.0.1/", Reason::Loopback),
            ("https://0x7f000001/", Reason::Loopback),
            ("https://127.1/", Reason::Loopback),
            ("https://017700000001/", Reason::Loopback),
            ("https://[::ffff:7f00:1]/", Reason::Loopback),
            ("https://[0:0:0:0:0:ffff:a9fe:a9fe]/", Reason::Metadata),
            ("https://0/", Reason::Unspecified),
            ("https://0.0.0.0/", Reason::Unspecified),
            ("https://[::]/", Reason::Unspecified),
            ("https://0xa9.0xfe.0xa9.0xfe/", Reason::Metadata),
            ("https://167772161/", Reason::Private),
            ("https://100.64.1.1/", Reason::SharedCgnat),
        ] {
            assert_eq!(reason(url), Some(want), "{url}");
        }
        assert_eq!(reason("https://8.8.8.8/"), None);
        assert_eq!(reason("https://example.com/"), None);
    }

    #[test]
    fn a_named_host_is_held_to_its_allowed_ports() {
        let config = bulkhead_core::config::load(
            "[egress]\nallow_hosts = [\"jira.internal:8443\"]\n",
            &|_| None,
        )
        .unwrap();
        let egress = Egress::new(&config.egress);
        assert!(egress.check_str("https://jira.internal:8443/x").is_ok());
        assert!(egress.check_str("https://JIRA.internal.:8443/x").is_ok());
        assert_eq!(
            egress.check_str("https://jira.internal/x"),
            Err(EgressError::Port {
                host: "jira.internal".into(),
                port: 443
            })
        );
        // The resolver lets the allowed name reach inside, and nothing else.
        let inside: SocketAddr = "10.0.0.5:0".parse().unwrap();
        assert!(
            egress
                .rules
                .check_resolved("jira.internal", &[inside])
                .is_ok()
        );
        assert!(matches!(
            egress.rules.check_resolved("other.internal", &[inside]),
            Err(EgressError::Address {
                reason: Reason::Private,
                ..
            })
        ));
        let public: SocketAddr = "93.184.216.34:0".parse().unwrap();
        assert!(matches!(
            egress
                .rules
                .check_resolved("mixed.example", &[public, inside]),
            Err(EgressError::Address { .. })
        ));
        assert!(matches!(
            egress.rules.check_resolved("nothing.example", &[]),
            Err(EgressError::Unresolved { .. })
        ));
    }
}
