//! Test doubles for outside services, speaking their real wire formats:
//! an OAuth2 token endpoint (RFC 6749 §5) on a loopback socket, and a
//! capture of this process's log output.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};

/// One request the token endpoint received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub authorization: Option<String>,
    pub body: String,
}

/// What the endpoint answers next.
#[derive(Clone)]
pub enum Answer {
    /// 200 with these tokens.
    Grant {
        access_token: String,
        refresh_token: Option<String>,
        expires_in: u64,
    },
    /// 400 `invalid_grant`.
    InvalidGrant,
    /// Any status and JSON body, with a `Location` header when given: an
    /// internal service answering, or a redirect.
    Raw {
        status: u16,
        body: Value,
        location: Option<String>,
    },
}

#[derive(Default)]
struct Inner {
    recorded: Vec<Recorded>,
    script: VecDeque<Answer>,
}

/// A scriptable OAuth2 token endpoint at `http://ADDR/token`.
pub struct FakeTokenEndpoint {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn token(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let answer = {
        let mut i = inner.lock().unwrap();
        i.recorded.push(Recorded {
            authorization: headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned()),
            body,
        });
        i.script.pop_front().unwrap_or(Answer::InvalidGrant)
    };
    // Slow enough that concurrent callers really overlap with the refresh.
    tokio::task::yield_now().await;
    match answer {
        Answer::Grant {
            access_token,
            refresh_token,
            expires_in,
        } => {
            let mut v = json!({"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in});
            if let Some(r) = refresh_token {
                v["refresh_token"] = Value::String(r);
            }
            (StatusCode::OK, HeaderMap::new(), axum::Json(v))
        }
        Answer::Raw {
            status,
            body,
            location,
        } => {
            let mut headers = HeaderMap::new();
            if let Some(l) = location {
                headers.insert("location", l.parse().unwrap());
            }
            (
                StatusCode::from_u16(status).unwrap(),
                headers,
                axum::Json(body),
            )
        }
        Answer::InvalidGrant => (
            StatusCode::BAD_REQUEST,
            HeaderMap::new(),
            axum::Json(
                json!({"error": "invalid_grant", "error_description": "refresh token revoked"}),
            ),
        ),
    }
}

impl FakeTokenEndpoint {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/token", post(token))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            inner,
            _shutdown: tx,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn push(&self, answer: Answer) {
        self.inner.lock().unwrap().script.push_back(answer);
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().recorded.clone()
    }
}

/// Everything this test process has logged, from the first call on.
pub fn logs() -> String {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buf = BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Writer(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    });
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
