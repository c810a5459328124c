//! `seedling review serve`: the review page and its JSON API (axum). One
//! session behind one lock: decisions from any number of browsers are
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
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use seedling_common::ids::NodeId;

use super::ledger::ReviewError;
use super::session::ReviewSession;
use super::verdict::{Decision, DecisionError, RejectReason, check_reviewer};
use crate::lineage::lineage_report;

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/review.js");
const STYLE: &str = include_str!("page/review.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// The header every API call carries the token in.
pub const TOKEN_HEADER: &str = "x-seedling-token";

#[derive(Debug, Clone)]
struct AppState {
    session: Arc<Mutex<ReviewSession>>,
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
#[derive(Debug)]
pub struct BoundReview {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    state: AppState,
}

impl BoundReview {
    pub async fn bind(session: ReviewSession, settings: ServeSettings) -> Result<Self, ServeError> {
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
                session: Arc::new(Mutex::new(session)),
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

fn failed(err: ReviewError) -> Response {
    let status = match &err {
        ReviewError::Decision(DecisionError::UnknownRecord(_)) => StatusCode::NOT_FOUND,
        ReviewError::Decision(DecisionError::Duplicate(_)) => StatusCode::CONFLICT,
        ReviewError::Decision(_) | ReviewError::Import(_) | ReviewError::Settings(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ReviewError::Lineage(_) | ReviewError::UnknownPlan(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refuse(status, err.to_string())
}

/// Runs `work` on the session off the async threads (a decision waits for
/// an fsync).
async fn with_session<T: Send + 'static>(
    app: &AppState,
    work: impl FnOnce(&mut ReviewSession) -> Result<T, ReviewError> + Send + 'static,
) -> Result<T, Response> {
    let session = Arc::clone(&app.session);
    let joined = tokio::task::spawn_blocking(move || {
        let mut session = session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut session)
    })
    .await;
    match joined {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(failed(err)),
        Err(err) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())),
    }
}

/// [`with_session`] for the API's JSON answers.
async fn answer_json(
    app: &AppState,
    work: impl FnOnce(&mut ReviewSession) -> Result<serde_json::Value, ReviewError> + Send + 'static,
) -> Response {
    match with_session(app, work).await {
        Ok(body) => Json(body).into_response(),
        Err(response) => response,
    }
}

/// Where `reviewer` stands: the figures, and the record to show next.
fn view(
    session: &ReviewSession,
    reviewer: &str,
    show: Option<NodeId>,
) -> Result<serde_json::Value, ReviewError> {
    let figures = session.figures();
    let show = show.or_else(|| session.next_for(reviewer));
    let item = match show {
        Some(record) => Some(session.item(&record, reviewer)?),
        None => None,
    };
    Ok(serde_json::json!({
        "plan": session.plan(),
        "domain": session.domain(),
        "reasons": RejectReason::ALL
            .iter()
            .map(|r| serde_json::json!({ "name": r.as_str(), "label": r.label() }))
            .collect::<Vec<_>>(),
        "progress": figures.progress_line(),
        "mine": session.done_by(reviewer),
        "figures": figures,
        "item": item,
    }))
}

#[derive(Deserialize)]
struct Who {
    reviewer: String,
}

async fn state(State(app): State<AppState>, Query(who): Query<Who>) -> Response {
    if let Err(err) = check_reviewer(&who.reviewer) {
        return failed(err.into());
    }
    answer_json(&app, move |s| view(s, &who.reviewer, None)).await
}

async fn decide(State(app): State<AppState>, Json(value): Json<serde_json::Value>) -> Response {
    let decision = match Decision::from_json(value) {
        Ok(d) => d,
        Err(err) => return failed(err.into()),
    };
    answer_json(&app, move |s| {
        let taken = s.decide(&decision)?;
        let mut body = view(s, &decision.reviewer, None)?;
        body["taken"] = serde_json::json!(taken);
        Ok(body)
    })
    .await
}

async fn undo(State(app): State<AppState>, Json(who): Json<Who>) -> Response {
    answer_json(&app, move |s| {
        let record = s.undo(&who.reviewer)?;
        let mut body = view(s, &who.reviewer, Some(record.clone()))?;
        body["undone"] = serde_json::json!(record);
        Ok(body)
    })
    .await
}

async fn lineage(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let answer = with_session(&app, move |s| {
        let id = NodeId::new(id);
        if s.store().node(&id)?.is_none_or(|n| &n.plan != s.plan()) {
            return Err(DecisionError::UnknownRecord(id.to_string()).into());
        }
        Ok(lineage_report(s.store(), &id, 3, false)?)
    })
    .await;
    match answer {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(response) => response,
    }
}

/// A fresh random token for a page served beyond loopback.
pub fn new_token() -> String {
    seedling_proto::auth::fresh_secret()
}
