//! The console's routes and the access rule in front of them.
//!
//! Owns the URL space (`/` the overview page, `/device?name=`, `/channel?key=` and `/alerts` the
//! detail pages, `/reports` and `/report?date=` the daily reports (`POST /reports` makes one),
//! `POST /alerts/ack` the acknowledgement form, `POST /write` a write to a writable Modbus point
//! (what `gateway write` sends), `/config` the effective
//! configuration,
//! `/metrics`, `/healthz`, `/readyz`, `/login`), reading the form, the same-origin check on
//! posts, and the token check: with a token configured, every request, to any path, needs
//! `Authorization: Bearer <token>` (Prometheus, curl, `gateway` commands) or the session cookie
//! a browser gets by entering the token on `/login` (a browser sends no `Authorization` header
//! of its own). Without either, a browser's page request is sent to `/login`, and anything else
//! gets 401 and an empty body. It does not bind sockets or decide readiness
//! ([`super::Console`], [`super::ready`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tracing::warn;

use super::chart::Span;
use super::exposition;
use super::pages::{self, Lang, Overview};
use super::{detail, ConsoleState};
use crate::engine::command::AckRequest;
use crate::history::Curve;

/// Every route of the console, behind the access rule.
pub fn router(state: Arc<ConsoleState>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/alerts/ack", post(acknowledge))
        .route("/write", post(write_point))
        .route("/alerts", get(alert_log))
        .route("/reports", get(report_list).post(report_make))
        .route("/report", get(report_page))
        .route("/device", get(device_page))
        .route("/channel", get(channel_page))
        .route("/config", get(config_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/login", get(login_page).post(login))
        // `layer`, not `route_layer`: unknown paths are refused too, so they reveal nothing.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_token,
        ))
        .with_state(state)
}

/// 401 unless the request carries the configured token or a session cookie (compared in
/// constant time); a browser asking for a page without either is sent to `/login`.
async fn require_token(
    State(state): State<Arc<ConsoleState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(access) = &state.access else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let now_s = crate::model::now_ns().unsigned_abs() / 1_000_000_000;
    let session = session_cookie(headers).is_some_and(|v| access.admits_session(v, now_s));
    if bearer.is_some_and(|g| access.admits(g)) || session || request.uri().path() == "/login" {
        return next.run(request).await;
    }
    let wants_page = request.method() == axum::http::Method::GET
        && headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    if wants_page {
        let next_path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let to = format!("/login?next={}", pages::query_value(next_path));
        return (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
    )
        .into_response()
}

/// The value of the session cookie a request carries, if any.
fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(super::SESSION_COOKIE)
                .and_then(|rest| rest.strip_prefix('='))
        })
}

/// Where a login may send the browser back to: a path of this console, never another site
/// (`//host` or `https://…` would make the form an open redirect).
fn local_path(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

/// A wrong token on `/login` is answered after this long, so that guessing is slow.
pub const LOGIN_FAILURE_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// `/login?next=<path>`: the form asking for the console's access token.
async fn login_page(State(state): State<Arc<ConsoleState>>, uri: axum::http::Uri) -> Response {
    let (params, lang) = page_query(&uri);
    let next = local_path(params.get("next").map_or("/", String::as_str));
    if state.access.is_none() {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, next.to_owned())]).into_response();
    }
    Html(pages::login(&state.identity.site, next, false, lang).into_string()).into_response()
}

/// `POST /login` with `token` and `next`: with the right token, the session cookie (HttpOnly,
/// SameSite=Strict, [`super::SESSION_TTL`]) and back to `next`; otherwise the form again, 401.
async fn login(
    State(state): State<Arc<ConsoleState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(form) = same_origin_form(&headers, &body) else {
        return cross_site_refused();
    };
    let field = |k: &str| form.get(k).map_or("", String::as_str);
    let next = local_path(field("next")).to_owned();
    let lang = form_lang(&form);
    let Some(access) = &state.access else {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, next)]).into_response();
    };
    if access.admits(field("token").as_bytes()) {
        let now_s = crate::model::now_ns().unsigned_abs() / 1_000_000_000;
        let cookie = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            super::SESSION_COOKIE,
            access.session(now_s),
            super::SESSION_TTL.as_secs()
        );
        return (
            StatusCode::SEE_OTHER,
            [(header::SET_COOKIE, cookie), (header::LOCATION, next)],
        )
            .into_response();
    }
    warn!("Console login with a wrong token refused.");
    tokio::time::sleep(LOGIN_FAILURE_DELAY).await;
    (
        StatusCode::UNAUTHORIZED,
        Html(pages::login(&state.identity.site, &next, true, lang).into_string()),
    )
        .into_response()
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

/// The parameters of a page's query string, and its language.
fn page_query(uri: &axum::http::Uri) -> (std::collections::BTreeMap<String, String>, Lang) {
    let params = form_fields(uri.query().unwrap_or_default().as_bytes());
    (params, Lang::from_query(uri.query()))
}

/// The query parameter `name`, or a 400 saying how the URL is written (`usage`).
fn required<'a>(
    params: &'a std::collections::BTreeMap<String, String>,
    name: &str,
    usage: &str,
) -> Result<&'a String, (StatusCode, String)> {
    params.get(name).ok_or_else(|| {
        (
            StatusCode::BAD_REQUEST,
            format!("write the address as {usage}\n"),
        )
    })
}

/// The history's state, read off the runtime's worker threads (it takes the history's lock,
/// which a flush holds while writing).
async fn history_stats(state: &ConsoleState) -> Option<crate::history::HistoryStats> {
    let h = Arc::clone(state.history.as_ref()?);
    crate::supervise::spawn_blocking(move || h.stats())
        .await
        .ok()
}

/// The curve of channel `key` over `span` ending `now` (empty without a history).
async fn curve_of(state: &ConsoleState, key: String, span: Span, now: i64) -> Curve {
    let Some(h) = state.history.as_ref().map(Arc::clone) else {
        return Curve::default();
    };
    let from = now - span.secs() * crate::model::NANOS_PER_SEC;
    crate::supervise::spawn_blocking(move || h.curve(&key, from, now, span.tier()))
        .await
        .unwrap_or_default()
}

/// What the detail pages are about: this console's site and gateway, `now`, the engine's
/// `view` and the history's `stats`.
fn context<'a>(
    state: &'a ConsoleState,
    view: &'a crate::engine::view::SiteView,
    now: i64,
    stats: Option<&'a crate::history::HistoryStats>,
) -> detail::Context<'a> {
    detail::Context {
        site: &state.identity.site,
        gateway: &state.identity.gateway,
        now_ns: now,
        view,
        history: stats,
    }
}

/// `/device?name=<device>&span=1h|24h|7d`: the device's channels and their curves (24 h by
/// default).
async fn device_page(State(state): State<Arc<ConsoleState>>, uri: axum::http::Uri) -> Response {
    let (params, lang) = page_query(&uri);
    let span = Span::from_param(params.get("span").map(String::as_str), Span::Day);
    let name = match required(&params, "name", "/device?name=<device>") {
        Ok(n) => n,
        Err(refused) => return refused.into_response(),
    };
    let view = Arc::clone(&state.view.borrow());
    let now = crate::model::now_ns();
    let mut curves = Vec::new();
    for ch in view.channels.iter().filter(|c| &c.series.device == name) {
        curves.push((ch, curve_of(&state, ch.series.key.clone(), span, now).await));
    }
    let stats = history_stats(&state).await;
    let counters = state.metrics.snapshot();
    let context = context(&state, &view, now, stats.as_ref());
    let status = if curves.is_empty() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    let page = detail::device(&context, name, &counters, &curves, span, lang);
    (status, Html(page.into_string())).into_response()
}

/// `/channel?key=<device/point>&span=1h|24h|7d`: one channel's curve and buckets (1 h by
/// default).
async fn channel_page(State(state): State<Arc<ConsoleState>>, uri: axum::http::Uri) -> Response {
    let (params, lang) = page_query(&uri);
    let span = Span::from_param(params.get("span").map(String::as_str), Span::Hour);
    let key = match required(&params, "key", "/channel?key=<device>/<point>") {
        Ok(k) => k,
        Err(refused) => return refused.into_response(),
    };
    let view = Arc::clone(&state.view.borrow());
    let now = crate::model::now_ns();
    let curve = curve_of(&state, key.clone(), span, now).await;
    let channel = view.channels.iter().find(|c| &c.series.key == key);
    let stats = history_stats(&state).await;
    let context = context(&state, &view, now, stats.as_ref());
    let status = if channel.is_none() && curve.buckets.is_empty() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    let page = detail::channel(&context, key, channel, &curve, span, lang);
    (status, Html(page.into_string())).into_response()
}

/// `/alerts`: the active alerts with the acknowledgement form, and the alert events of the
/// history window.
async fn alert_log(State(state): State<Arc<ConsoleState>>, uri: axum::http::Uri) -> Response {
    let lang = Lang::from_query(uri.query());
    let view = Arc::clone(&state.view.borrow());
    let now = crate::model::now_ns();
    let stats = history_stats(&state).await;
    let events = match (state.history.as_ref().map(Arc::clone), &stats) {
        (Some(h), Some(s)) => {
            let kept = i64::try_from(s.kept.as_nanos()).unwrap_or(i64::MAX);
            let from = now.saturating_sub(kept);
            crate::supervise::spawn_blocking(move || h.alerts(from, detail::ALERT_ROWS))
                .await
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let context = context(&state, &view, now, stats.as_ref());
    Html(detail::alert_log(&context, &events, lang).into_string()).into_response()
}

/// `/reports`: the daily reports kept, newest first, and the form to make one.
async fn report_list(State(state): State<Arc<ConsoleState>>, uri: axum::http::Uri) -> Response {
    let lang = Lang::from_query(uri.query());
    let dir = state.data_dir.clone();
    let days = crate::supervise::spawn_blocking(move || crate::report::list(&dir))
        .await
        .unwrap_or_default();
    let today = crate::report::Day::of(crate::model::now_ns()).date;
    let page = detail::report_list(
        &state.identity.site,
        &days,
        &today,
        state.history.is_some(),
        lang,
    );
    Html(page.into_string()).into_response()
}

/// `/report?date=YYYY-MM-DD`: the kept report of that day, as it was made.
async fn report_page(State(state): State<Arc<ConsoleState>>, uri: axum::http::Uri) -> Response {
    let (params, _) = page_query(&uri);
    let day = match crate::report::Day::parse(params.get("date").map_or("", String::as_str)) {
        Ok(d) => d,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let path = crate::report::path_of(&state.data_dir, &day);
    match tokio::fs::read_to_string(&path).await {
        Ok(page) => Html(page).into_response(),
        Err(_) => (
            StatusCode::NOT_FOUND,
            format!("no daily report for {} (make one on /reports)\n", day.date),
        )
            .into_response(),
    }
}

/// `POST /reports` with `date=YYYY-MM-DD`: make that day's report now (again, if it exists) and
/// show it; `gateway report --date` uses this while the service runs. Same-origin rule as the
/// acknowledgement form.
async fn report_make(
    State(state): State<Arc<ConsoleState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(form) = same_origin_form(&headers, &body) else {
        return cross_site_refused();
    };
    let day = match crate::report::Day::parse(form.get("date").map_or("", String::as_str)) {
        Ok(d) => d,
        Err(e) => return (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")).into_response(),
    };
    let Some(history) = state.history.as_ref().map(Arc::clone) else {
        return (
            StatusCode::NOT_FOUND,
            "no local history is kept ([console.history] enabled = false): no report can be made\n",
        )
            .into_response();
    };
    let dir = state.data_dir.clone();
    let (site, gateway) = (state.identity.site.clone(), state.identity.gateway.clone());
    let now = crate::model::now_ns();
    let made = crate::supervise::spawn_blocking(move || {
        crate::report::make(&history, &dir, &day, &site, &gateway, now)
    })
    .await;
    match made {
        Ok(Ok((path, _))) => match tokio::fs::read_to_string(&path).await {
            Ok(page) => Html(page).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        },
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The effective configuration, as `gateway check` prints it (`?lang=en` for English).
async fn config_page(State(state): State<Arc<ConsoleState>>, uri: axum::http::Uri) -> Response {
    let id = &state.identity;
    let page = pages::config(
        &id.site,
        &id.gateway,
        &id.config_text,
        Lang::from_query(uri.query()),
    );
    Html(page.into_string()).into_response()
}

/// Longest time the form waits for the engine's answer (it answers within one commit).
pub const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST /alerts/ack` with `id`, `by`, `note` (and `lang`) as a form: hand the acknowledgement
/// to the engine and show its answer. A post from another site's page (an `Origin` that is not
/// this console) is refused: without a token, any web page open in a browser on the box could
/// otherwise post here.
async fn acknowledge(
    State(state): State<Arc<ConsoleState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(form) = same_origin_form(&headers, &body) else {
        return cross_site_refused();
    };
    let field = |k: &str| form.get(k).map_or("", String::as_str);
    let lang = form_lang(&form);
    let Some(commands) = &state.commands else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = AckRequest {
        id: field("id").to_owned(),
        by: field("by").to_owned(),
        note: field("note").to_owned(),
        reply,
    };
    let outcome = match commands.send(request).await {
        Err(_) => Err(None),
        Ok(()) => match tokio::time::timeout(ACK_TIMEOUT, answer).await {
            Ok(Ok(Ok(acked))) => Ok(acked),
            Ok(Ok(Err(refused))) => Err(Some(refused)),
            Ok(Err(_)) | Err(_) => Err(None),
        },
    };
    let status = match &outcome {
        Ok(_) => StatusCode::OK,
        Err(Some(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        Err(None) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        status,
        Html(pages::ack_result(&outcome, lang).into_string()),
    )
        .into_response()
}

/// Longest time `POST /write` waits for the device: the poller sends the write after the poll
/// in progress, with the device's timeout and retries.
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `POST /write` with `device`, `point` and `value` as a form: write the value to the writable
/// point through the poller of the device's bus. Plain-text answer: 200 written, 422 refused
/// before sending (unknown, not writable, a value the point cannot take), 502 the device
/// refused or did not confirm, 503 the gateway cannot write now. Cross-site posts are refused
/// as for the acknowledgement form.
async fn write_point(
    State(state): State<Arc<ConsoleState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use crate::sources::modbus::write::WriteError;
    let Some(form) = same_origin_form(&headers, &body) else {
        return cross_site_refused();
    };
    let Some(writers) = &state.writers else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let field = |k: &str| form.get(k).map_or("", String::as_str);
    let (device, point) = (field("device"), field("point"));
    let Ok(value) = field("value").trim().parse::<f64>() else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("value \"{}\" is not a number\n", field("value")),
        )
            .into_response();
    };
    let target = match writers.resolve(device, point, value) {
        Ok(t) => t,
        Err(e) => return (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")).into_response(),
    };
    let written = tokio::time::timeout(WRITE_TIMEOUT, writers.write(device, target.clone())).await;
    let (status, text) = match written {
        Ok(Ok(())) => (
            StatusCode::OK,
            format!("written: {device}/{point} = {value} ({target})\n"),
        ),
        Ok(Err(e @ (WriteError::Exception { .. } | WriteError::Failed { .. }))) => {
            (StatusCode::BAD_GATEWAY, format!("{e}\n"))
        }
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("device \"{device}\" did not confirm the write within {WRITE_TIMEOUT:?}\n"),
        ),
    };
    if status == StatusCode::OK {
        tracing::info!(device, point, value, write = %target, "Written on request.");
    } else {
        warn!(device, point, value, status = status.as_u16(), answer = %text.trim_end(), "Write on request not done.");
    }
    (status, text).into_response()
}

/// The fields of a form post; `None` for a post from another site's page ([`same_origin`]).
fn same_origin_form(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Option<std::collections::BTreeMap<String, String>> {
    same_origin(headers).then(|| form_fields(body))
}

/// The language a form asks for with its `lang` field (`en`; anything else is Chinese, as
/// [`Lang::from_query`] reads a query).
fn form_lang(form: &std::collections::BTreeMap<String, String>) -> Lang {
    if form.get("lang").is_some_and(|v| v == "en") {
        Lang::En
    } else {
        Lang::Zh
    }
}

/// The answer to a post [`same_origin_form`] refused.
fn cross_site_refused() -> Response {
    (StatusCode::FORBIDDEN, "cross-site form posts are refused\n").into_response()
}

/// True unless the request names an `Origin` other than its own `Host` (browsers send `Origin`
/// with every form post; tools such as curl send none and are let through).
fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((origin_host, host), (Some(o), Some(h)) if o == h)
}

/// The fields of an `application/x-www-form-urlencoded` body (HTML 5, "URL-encoded form data":
/// `+` is a space, then percent-decoding as UTF-8, invalid bytes replaced).
fn form_fields(body: &[u8]) -> std::collections::BTreeMap<String, String> {
    let decode = |s: &[u8]| {
        let plus: Vec<u8> = s
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_encoding::percent_decode(&plus)
            .decode_utf8_lossy()
            .into_owned()
    };
    body.split(|&b| b == b'&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.iter().position(|&b| b == b'=') {
            Some(i) => (decode(&kv[..i]), decode(&kv[i + 1..])),
            None => (decode(kv), String::new()),
        })
        .collect()
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
    let history = history_stats(&state).await;
    match exposition::render(
        &state.metrics,
        &spool,
        history.as_ref(),
        state.started.elapsed(),
    ) {
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

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    #[test]
    fn form_fields_decode_plus_percent_and_utf8() {
        let f = form_fields(
            b"id=ab12&by=%E7%9B%91%E7%90%86+%E7%8E%8B%E5%B7%A5&note=a%2Bb%26c%3Dd&lang=en&flag",
        );
        assert_eq!(f.get("id").map(String::as_str), Some("ab12"));
        assert_eq!(f.get("by").map(String::as_str), Some("监理 王工"));
        assert_eq!(f.get("note").map(String::as_str), Some("a+b&c=d"));
        assert_eq!(f.get("flag").map(String::as_str), Some(""));
        // Bytes that are not UTF-8 are replaced, not refused.
        assert_eq!(
            form_fields(b"by=%FF").get("by").map(String::as_str),
            Some("\u{fffd}")
        );
    }

    #[test]
    fn posts_from_another_origin_are_refused() {
        let with = |origin: Option<&'static str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_static(o));
            }
            same_origin(&h)
        };
        assert!(with(None), "curl sends no Origin");
        assert!(with(Some("http://127.0.0.1:8080")));
        assert!(!with(Some("http://evil.example")));
        assert!(!with(Some("http://127.0.0.1:8081")));
        assert!(!with(Some("null")));
    }
}
