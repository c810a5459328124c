//! `seedling review serve`: the review page and its JSON API (axum), each
//! call handed to a [`Desk`]: decisions from any number of browsers are
//! taken one at a time, each durable before it is answered.
//!
//! Records are model output and may hold anything, HTML included: the page
//! only ever sets them as text, and its Content-Security-Policy allows no
//! inline script, so markup in a record can neither render nor run.
//! Beyond loopback every API call must carry the token. Requests whose
//! `Host` is not the address served are refused, so a web page elsewhere
//! cannot reach the API through DNS rebinding, and the API takes JSON
//! bodies only, which a cross-site form cannot send without a preflight.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::desk::{Desk, DeskAnswer, DeskCall, DeskRefusal, RefusalKind};

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/review.js");
const STYLE: &str = include_str!("page/review.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// The header every API call carries the token in.
pub const TOKEN_HEADER: &str = "x-seedling-token";

#[derive(Clone)]
struct AppState {
    desk: Arc<dyn Desk>,
    token: Option<Arc<str>>,
    /// `Host` values the page may be reached under.
    hosts: Arc<Vec<String>>,
}

/// Where the page listens and who may use it.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    /// Required of every API call; must be set beyond loopback.
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "the review page would listen on {0}, beyond loopback, without a token; pass --token (or SEEDLING_REVIEW_TOKEN)"
    )]
    NoToken(SocketAddr),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The page's port, bound and ready to serve.
pub struct BoundReview {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    state: AppState,
}

impl std::fmt::Debug for BoundReview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundReview")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl BoundReview {
    /// Binds the page of the review `desk` answers: a session on this
    /// machine, or a coordinator's.
    pub async fn bind(desk: Arc<dyn Desk>, settings: ServeSettings) -> Result<Self, ServeError> {
        if !settings.listen.ip().is_loopback() && settings.token.is_none() {
            return Err(ServeError::NoToken(settings.listen));
        }
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| ServeError::Bind {
                address: settings.listen,
                source,
            })?;
        let address = listener.local_addr().map_err(|source| ServeError::Bind {
            address: settings.listen,
            source,
        })?;
        let port = address.port();
        let mut hosts = vec![address.to_string(), format!("localhost:{port}")];
        if address.ip().is_unspecified() {
            // Reached under any of the machine's names: the token guards it.
            hosts.clear();
        } else if address.ip().is_loopback() {
            hosts.push(format!("127.0.0.1:{port}"));
        }
        Ok(Self {
            listener,
            address,
            state: AppState {
                desk,
                token: settings.token.map(Arc::from),
                hosts: Arc::new(hosts),
            },
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let api = Router::new()
            .route("/api/state", get(state))
            .route("/api/decisions", post(decide))
            .route("/api/undo", post(undo))
            .route("/api/lineage/{id}", get(lineage))
            .route_layer(middleware::from_fn_with_state(
                self.state.clone(),
                require_token,
            ));
        let app = Router::new()
            .route(
                "/",
                get(|| async { page(PAGE, "text/html; charset=utf-8") }),
            )
            .route(
                "/review.js",
                get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }),
            )
            .route(
                "/review.css",
                get(|| async { page(STYLE, "text/css; charset=utf-8") }),
            )
            .merge(api)
            .layer(middleware::from_fn_with_state(
                self.state.clone(),
                check_host,
            ))
            .with_state(self.state);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn page(body: &'static str, kind: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    secure(headers);
    response
}

fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

async fn check_host(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !app.hosts.is_empty() && !app.hosts.iter().any(|h| h == host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!("this page is served as {}, not {host:?}", app.hosts[0]),
        );
    }
    let mut response = next.run(request).await;
    secure(response.headers_mut());
    response
}

async fn require_token(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(expected) = &app.token {
        let presented = request
            .headers()
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !seedling_proto::auth::same_secret(presented.as_bytes(), expected.as_bytes()) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this review page needs its token: open the URL `seedling review serve` printed"
                    .into(),
            );
        }
    }
    next.run(request).await
}

fn refuse(status: StatusCode, error: String) -> Response {
    (status, Json(serde_json::json!({ "error": error }))).into_response()
}

fn refused(refusal: DeskRefusal) -> Response {
    let status = match refusal.kind {
        RefusalKind::NotFound => StatusCode::NOT_FOUND,
        RefusalKind::Conflict => StatusCode::CONFLICT,
        RefusalKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        RefusalKind::Forbidden => StatusCode::FORBIDDEN,
        RefusalKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refuse(status, refusal.message)
}

/// Hands `call` to the desk and answers as it did.
async fn ask(app: &AppState, call: DeskCall) -> Response {
    match app.desk.call(call).await {
        Ok(DeskAnswer::Json(body)) => Json(body).into_response(),
        Ok(DeskAnswer::Text(text)) => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        }
        Err(refusal) => refused(refusal),
    }
}

#[derive(Deserialize)]
struct Who {
    reviewer: String,
}

async fn state(State(app): State<AppState>, Query(who): Query<Who>) -> Response {
    let call = DeskCall::Standing {
        reviewer: who.reviewer,
    };
    ask(&app, call).await
}

async fn decide(State(app): State<AppState>, Json(value): Json<serde_json::Value>) -> Response {
    ask(&app, DeskCall::Decide(value)).await
}

async fn undo(State(app): State<AppState>, Json(who): Json<Who>) -> Response {
    let call = DeskCall::Undo {
        reviewer: who.reviewer,
    };
    ask(&app, call).await
}

async fn lineage(State(app): State<AppState>, Path(node): Path<String>) -> Response {
    ask(&app, DeskCall::Lineage { node }).await
}

/// A fresh random token for a page served beyond loopback.
pub fn new_token() -> String {
    seedling_proto::auth::fresh_secret()
}
