//! The guard against real sockets on loopback: literal addresses in every
//! spelling a URL parser accepts, names that resolve inside, redirect
//! hops, and what the operator's rules let through.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bulkhead_egress::{ClientOptions, Egress, EgressError, GuardedClient, Reason, Redirects};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback HTTP/1.1 server answering every request with one fixed
/// response, recording the request line of each.
struct Target {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Target {
    async fn start(response: String) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                record.lock().unwrap().push(line);
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        Target { addr, seen }
    }

    async fn ok() -> Target {
        Self::start(
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nreached".into(),
        )
        .await
    }

    async fn redirect_to(location: &str) -> Target {
        Self::start(format!(
            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ))
        .await
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn guard(egress_table: &str) -> Egress {
    let config =
        bulkhead_core::config::load(&format!("[egress]\n{egress_table}\n"), &|_| None).unwrap();
    Egress::new(&config.egress)
}

fn client(egress: &Egress, redirects: Redirects) -> GuardedClient {
    egress
        .client(ClientOptions {
            redirects,
            ..ClientOptions::default()
        })
        .unwrap()
}

/// Sends a GET through the guard: the refusal, or the status and body.
async fn get(client: &GuardedClient, url: &str) -> Result<(u16, String), EgressError> {
    let req = client.request_str(Method::GET, url)?;
    match req.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            Ok((status, res.text().await.unwrap_or_default()))
        }
        Err(e) => match Egress::refusal(&e) {
            Some(refusal) => Err(refusal.clone()),
            None => panic!("{url}: failed for another reason than the guard: {e}"),
        },
    }
}

/// Proves the refused requests never reached `target`: one allowed request
/// afterwards is the only one it saw.
async fn only_the_allowed_request_arrived(target: &Target) {
    let open = client(
        &guard("allow_http = true\nallow_hosts = [\"127.0.0.0/8\"]"),
        Redirects::None,
    );
    let url = format!("http://127.0.0.1:{}/allowed", target.port());
    assert_eq!(get(&open, &url).await.unwrap().0, 200);
    assert_eq!(target.seen(), ["GET /allowed HTTP/1.1"]);
}

#[tokio::test]
async fn loopback_in_every_spelling_is_refused_before_connecting() {
    let target = Target::ok().await;
    let port = target.port();
    let strict = client(&guard("allow_http = true"), Redirects::None);
    for host in [
        "127.0.0.1".to_owned(),
        "127.1".into(),
        "2130706433".into(),
        "0x7f000001".into(),
        "0177.0.0.1".into(),
        "0x7f.0.0.1".into(),
        "[::ffff:127.0.0.1]".into(),
        "[::ffff:7f00:1]".into(),
        "0.0.0.0".into(),
        "0".into(),
        "[::]".into(),
        "[::1]".into(),
    ] {
        let url = format!("http://{host}:{port}/x");
        let err = get(&strict, &url).await.unwrap_err();
        assert_eq!(err.code(), "egress_refused");
        assert!(
            matches!(
                err,
                EgressError::Address {
                    reason: Reason::Loopback | Reason::Unspecified,
                    ..
                }
            ),
            "{url}: {err:?}"
        );
    }
    only_the_allowed_request_arrived(&target).await;
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_after_resolution() {
    let target = Target::ok().await;
    let strict = client(&guard("allow_http = true"), Redirects::None);
    let err = get(&strict, &format!("http://localhost:{}/x", target.port()))
        .await
        .unwrap_err();
    match &err {
        EgressError::Address { host, addr, reason } => {
            assert_eq!(host, "localhost");
            assert!(addr.is_loopback(), "{addr}");
            assert_eq!(*reason, Reason::Loopback);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("localhost resolves to"), "{err}");
    // The early check says the same before anything is stored.
    let vetted = guard("allow_http = true")
        .vet(&format!("http://localhost:{}/token", target.port()))
        .await;
    assert!(
        matches!(vetted, Err(EgressError::Address { .. })),
        "{vetted:?}"
    );
    only_the_allowed_request_arrived(&target).await;
}

#[tokio::test]
async fn plain_http_is_refused_unless_allowed_even_to_an_allowed_address() {
    let target = Target::ok().await;
    let no_http = client(&guard("allow_hosts = [\"127.0.0.0/8\"]"), Redirects::None);
    let err = get(&no_http, &format!("http://127.0.0.1:{}/", target.port()))
        .await
        .unwrap_err();
    assert!(matches!(err, EgressError::Scheme { .. }), "{err:?}");
    for url in [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/",
    ] {
        assert!(
            matches!(
                no_http.request_str(Method::GET, url),
                Err(EgressError::Scheme { .. })
            ),
            "{url}"
        );
    }
    only_the_allowed_request_arrived(&target).await;
}

#[tokio::test]
async fn a_redirect_to_loopback_is_not_followed() {
    let inner = Target::ok().await;
    for location in [
        format!("http://127.0.0.1:{}/internal", inner.port()),
        format!("http://localhost:{}/internal", inner.port()),
        format!("http://[::ffff:127.0.0.1]:{}/internal", inner.port()),
    ] {
        let outer = Target::redirect_to(&location).await;
        // The operator allows the first hop, literally, and nothing else.
        let egress = guard(&format!(
            "allow_http = true\nallow_hosts = [\"127.0.0.1:{}\"]",
            outer.port()
        ));
        let start = format!("http://127.0.0.1:{}/start", outer.port());
        let following = client(&egress, Redirects::Checked(5));
        let err = get(&following, &start).await.unwrap_err();
        assert!(
            matches!(err, EgressError::Address { .. }),
            "{location}: {err:?}"
        );
        // A client that follows no redirects hands back the 302 itself.
        let (status, _) = get(&client(&egress, Redirects::None), &start)
            .await
            .unwrap();
        assert_eq!(status, 302);
        assert_eq!(outer.seen().len(), 2, "{location}");
    }
    only_the_allowed_request_arrived(&inner).await;
}

#[tokio::test]
async fn a_checked_redirect_between_allowed_addresses_is_followed() {
    let inner = Target::ok().await;
    let outer = Target::redirect_to(&format!("http://127.0.0.1:{}/next", inner.port())).await;
    let egress = guard(&format!(
        "allow_http = true\nallow_hosts = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]",
        outer.port(),
        inner.port()
    ));
    let (status, body) = get(
        &client(&egress, Redirects::Checked(5)),
        &format!("http://127.0.0.1:{}/start", outer.port()),
    )
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, "reached"));
    assert_eq!(inner.seen(), ["GET /next HTTP/1.1"]);
    // A loop is cut at the hop limit, not followed forever.
    let looping = Target::redirect_to("/again").await;
    let egress = guard(&format!(
        "allow_http = true\nallow_hosts = [\"127.0.0.1:{}\"]",
        looping.port()
    ));
    let err = get(
        &client(&egress, Redirects::Checked(3)),
        &format!("http://127.0.0.1:{}/", looping.port()),
    )
    .await
    .unwrap_err();
    assert_eq!(err, EgressError::TooManyRedirects);
    assert_eq!(looping.seen().len(), 4);
}

#[tokio::test]
async fn the_operators_rules_let_exactly_what_they_name_through() {
    let target = Target::ok().await;
    let port = target.port();
    // A literal address:port rule: that address, that port, written literally.
    let literal = client(
        &guard(&format!(
            "allow_http = true\nallow_hosts = [\"127.0.0.1:{port}\"]"
        )),
        Redirects::None,
    );
    assert_eq!(
        get(&literal, &format!("http://127.0.0.1:{port}/a"))
            .await
            .unwrap(),
        (200, "reached".to_owned())
    );
    assert!(
        get(
            &literal,
            &format!("http://127.0.0.1:{}/a", port.wrapping_add(1).max(1))
        )
        .await
        .is_err()
    );
    // …not a name resolving to it (the resolver does not see the port).
    assert!(matches!(
        get(&literal, &format!("http://localhost:{port}/a")).await,
        Err(EgressError::Address { .. })
    ));
    // A host:port rule: the name, whatever it resolves to, on that port only.
    let named = client(
        &guard(&format!(
            "allow_http = true\nallow_hosts = [\"LOCALHOST:{port}\"]"
        )),
        Redirects::None,
    );
    let other = if port == 1 { 2 } else { port - 1 };
    assert_eq!(
        get(&named, &format!("http://localhost.:{port}/b"))
            .await
            .unwrap()
            .0,
        200
    );
    assert!(matches!(
        get(&named, &format!("http://localhost:{other}/b")).await,
        Err(EgressError::Port { .. })
    ));
    // A network: any address in it, any port, however it is reached.
    // (`localhost` may resolve to ::1 as well: every address must pass.)
    let net = client(
        &guard("allow_http = true\nallow_hosts = [\"127.0.0.0/8\", \"::1/128\"]"),
        Redirects::None,
    );
    assert_eq!(
        get(&net, &format!("http://localhost:{port}/c"))
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        get(&net, &format!("http://[::ffff:127.0.0.1]:{port}/d"))
            .await
            .unwrap()
            .0,
        200
    );
    assert!(matches!(
        get(&net, "http://10.0.0.1:9/").await,
        Err(EgressError::Address {
            reason: Reason::Private,
            ..
        })
    ));
    assert_eq!(
        target.seen(),
        [
            "GET /a HTTP/1.1",
            "GET /b HTTP/1.1",
            "GET /c HTTP/1.1",
            "GET /d HTTP/1.1"
        ]
    );
}

#[tokio::test]
async fn metadata_private_and_cgnat_literals_are_refused() {
    let strict = client(&Egress::public_https_only(), Redirects::None);
    for (url, reason) in [
        (
            "https://169.254.169.254/latest/meta-data/",
            Reason::Metadata,
        ),
        (
            "https://[fd00:ec2::254]/latest/meta-data/",
            Reason::Metadata,
        ),
        ("https://[::ffff:169.254.169.254]/", Reason::Metadata),
        ("https://10.1.2.3/", Reason::Private),
        ("https://172.16.0.1/", Reason::Private),
        ("https://192.168.0.1/", Reason::Private),
        ("https://[fc00::1]/", Reason::Private),
        ("https://169.254.1.1/", Reason::LinkLocal),
        ("https://[fe80::1]/", Reason::LinkLocal),
        ("https://100.64.0.1/", Reason::SharedCgnat),
        ("https://3232235521/", Reason::Private),
    ] {
        match strict.request_str(Method::GET, url) {
            Err(EgressError::Address { reason: r, .. }) => assert_eq!(r, reason, "{url}"),
            other => panic!("{url}: {:?}", other.map(|_| ())),
        }
    }
}
