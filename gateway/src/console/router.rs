//! The console's routes and the access rule in front of them.
//!
//! Owns the URL space (`/` the overview page, `/metrics`, `/healthz`, `/readyz`) and the token
//! check: with a token configured, every request, to any
//! path, without `Authorization: Bearer <token>` gets 401 and an empty body. It does not bind
//! sockets or decide readiness ([`super::Console`], [`super::ready`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tracing::warn;

use super::exposition;
use super::pages::{self, Lang, Overview};
use super::ConsoleState;

/// Every route of the console, behind the access rule.
pub fn router(state: Arc<ConsoleState>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // `layer`, not `route_layer`: unknown paths are refused too, so they reveal nothing.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_token,
        ))
        .with_state(state)
}

/// 401 unless the request carries the configured token (compared in constant time).
async fn require_token(
    State(state): State<Arc<ConsoleState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(access) = &state.access {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !given.is_some_and(|g| access.admits(g)) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// The overview page (`?lang=en` for English).
async fn overview(State(state): State<Arc<ConsoleState>>, uri: axum::http::Uri) -> Response {
    let spool = state.spool_stats().await;
    let view = Arc::clone(&state.view.borrow());
    let counters = state.metrics.snapshot();
    let page = pages::overview(
        &Overview {
            site: &state.identity.site,
            gateway: &state.identity.gateway,
            uptime: state.started.elapsed(),
            now_ns: crate::model::now_ns(),
            view: &view,
            spool: &spool,
            counters: &counters,
        },
        Lang::from_query(uri.query()),
    );
    Html(page.into_string()).into_response()
}

/// The process answers: it is alive.
async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when ready, else 503 with the reasons, one per line.
async fn readyz(State(state): State<Arc<ConsoleState>>) -> Response {
    match state.readiness().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reasons) => {
            let mut body = reasons.join("\n");
            body.push('\n');
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
    }
}

/// Every counter and gauge in the text exposition format.
async fn metrics(State(state): State<Arc<ConsoleState>>) -> Response {
    let spool = state.spool_stats().await;
    match exposition::render(&state.metrics, &spool, state.started.elapsed()) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(exposition::CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            warn!(error = %e, "cannot render /metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
