//! Tests of the webhook sink: configuration errors, the exact bodies per format, DingTalk's
//! signature, the rate limit, and delivery against a scripted HTTP receiver on 127.0.0.1.
//!
//! The receiver is a fake, which docs/ARCHITECTURE.md §Tests allows only for failures a real server
//! cannot produce on demand: a 500 followed by a 200, a 400, and the robots' HTTP 200 answers
//! carrying `errcode` ≠ 0 (WeCom and DingTalk cannot be reached from a test, and must not be).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::config::{WebhookFormat, WebhookSinkConfig};
use super::format::{dingtalk_sign, dingtalk_signed_url, render_body, robot_verdict};
use super::sink::{RateLimit, WebhookSink, RATE_WINDOW, RETRIES};
use crate::alert::{stable_id, Alert, AlertKind, AlertState, Cause, Language, Level, Side};
use crate::metrics::Metrics;
use crate::model::QuantityKind;
use crate::sinks::Verdict;
use crate::spool::{Spool, SpoolConfig, Stream};

/// 2026-01-01T00:00:00Z in ns.
const T0: i64 = 1_767_225_600_000_000_000;

fn sample_alert() -> Alert {
    Alert {
        id: stable_id("xa", "settlement-total", Some(Side::Upper), &["lev-a1/ch3"], T0),
        seq: 0,
        kind: AlertKind::Quality,
        cause: Cause::Absolute,
        site: "xa".into(),
        structure: Some("A栋".into()),
        device: "lev-a1".into(),
        point: "ch3".into(),
        channel: "lev-a1/ch3".into(),
        channels: vec!["lev-a1/ch3".into()],
        quantity: Some(QuantityKind::Settlement),
        rule: "settlement-total".into(),
        label: None,
        side: Some(Side::Upper),
        level: Level::Orange,
        previous_level: None,
        state: AlertState::Raised,
        value: Some(32.5),
        threshold: Some(30.0),
        unit: "mm".into(),
        quality: None,
        started_at: T0,
        event_at: T0,
        detected_at: T0 + 1_000_000,
        // The zh message of this alert, as asserted in alert.rs's template tests.
        message: "【警戒】A栋 沉降点 lev-a1/ch3 累计沉降 32.5 mm，超过警戒值 30.0 mm（规则 settlement-total）"
            .into(),
        ack: None,
    }
}

fn env_with(url: &'static str) -> impl Fn(&str) -> Result<String, std::env::VarError> {
    move |k: &str| match k {
        "HOOK_URL" => Ok(url.to_owned()),
        "DING_SECRET" => Ok("SECtest-secret".to_owned()),
        _ => Err(std::env::VarError::NotPresent),
    }
}

fn parse(toml_text: &str) -> WebhookSinkConfig {
    toml::from_str(toml_text).expect("toml")
}

#[test]
fn config_errors_name_the_path_and_the_fix() {
    let env = env_with("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K");
    let cases: [(&str, &str, &str); 6] = [
        (
            "format = \"wecom\"",
            "sinks[2].url_env",
            "the receiver's URL is required; set url_env (or url_file) to where it is kept (it \
             holds the robot's key, so it is never written in the config)",
        ),
        (
            "format = \"wecom\"\nurl_env = \"MISSING\"",
            "sinks[2].url_env",
            "environment variable MISSING is not set; export it or use url_file",
        ),
        (
            "format = \"wecom\"\nurl_env = \"HOOK_URL\"\nsecret_env = \"DING_SECRET\"",
            "sinks[2].secret_env",
            "a signing secret is only used with format = \"dingtalk\"; remove it",
        ),
        (
            "format = \"wecom\"\nurl_env = \"HOOK_URL\"\nmax_per_minute = 30",
            "sinks[2].max_per_minute",
            "30 is above the robot's own limit of 20 per minute; the robot would throttle it \
             (and DingTalk blocks it for 10 minutes)",
        ),
        (
            "format = \"generic\"\nurl_env = \"HOOK_URL\"\nkinds = []",
            "sinks[2].kinds",
            "an empty list sends nothing; list \"quality\" and/or \"device_fault\", or remove the \
             sink",
        ),
        (
            "format = \"generic\"\nurl_env = \"HOOK_URL\"\nretry_initial = \"5s\"\nretry_max = \"1s\"",
            "sinks[2].retry_max",
            "1s is below retry_initial (5s)",
        ),
    ];
    for (text, path, message) in cases {
        let e = parse(text)
            .validate_with_env("sinks[2]", &env)
            .expect_err(text);
        assert_eq!(e.len(), 1, "{text}: {e:?}");
        assert_eq!(
            (e[0].at.as_str(), e[0].message.as_str()),
            (path, message),
            "{text}"
        );
    }
    // A URL that is not one: the message must not echo the value (it holds the key).
    let bad = env_with("not a url key=SECRETKEY");
    let e = parse("format = \"generic\"\nurl_env = \"HOOK_URL\"")
        .validate_with_env("sinks[2]", &bad)
        .expect_err("bad url")
        .remove(0);
    assert_eq!(e.at, "sinks[2].url_env");
    assert!(!e.message.contains("SECRETKEY"), "{}", e.message);
    // Unknown fields are refused by serde (deny_unknown_fields).
    assert!(toml::from_str::<WebhookSinkConfig>("format = \"wecom\"\nurl = \"x\"").is_err());
    // Defaults: WeCom gets its 20/min limit; the URL never shows in Debug.
    let ok = parse("format = \"wecom\"\nurl_env = \"HOOK_URL\"")
        .validate_with_env("sinks[2]", &env)
        .expect("valid");
    assert_eq!(ok.max_per_minute, Some(20));
    assert_eq!(ok.language, Language::Zh);
    assert!(!format!("{ok:?}").contains("key=K"));
}

#[test]
fn wecom_body_is_the_documented_markdown_message() {
    let a = sample_alert();
    let body = render_body(WebhookFormat::Wecom, &a, b"", Language::Zh).expect("body");
    assert_eq!(
        String::from_utf8(body).expect("utf8"),
        r#"{"msgtype":"markdown","markdown":{"content":"**工地 xa 质量告警：警戒（产生）**\n【警戒】A栋 沉降点 lev-a1/ch3 累计沉降 32.5 mm，超过警戒值 30.0 mm（规则 settlement-total）\n> 站点：xa\n> 时间：2026-01-01T00:00:00Z\n> 编号：e31146c9ff45c621/0"}}"#
    );
}

#[test]
fn dingtalk_body_has_a_title_and_paragraphs() {
    let mut a = sample_alert();
    a.state = AlertState::Cleared;
    a.seq = 3;
    let body = render_body(WebhookFormat::Dingtalk, &a, b"", Language::En).expect("body");
    assert_eq!(
        String::from_utf8(body).expect("utf8"),
        r#"{"msgtype":"markdown","markdown":{"title":"Site xa quality alert: warning (cleared)","text":"**Site xa quality alert: warning (cleared)**\n\n【警戒】A栋 沉降点 lev-a1/ch3 累计沉降 32.5 mm，超过警戒值 30.0 mm（规则 settlement-total）\n\n> Site: xa\n\n> Time: 2026-01-01T00:00:00Z\n\n> Id: e31146c9ff45c621/3"}}"#
    );
}

#[test]
fn generic_body_is_the_spool_line_itself() {
    let a = sample_alert();
    let line = serde_json::to_vec(&a).expect("json");
    let body = render_body(WebhookFormat::Generic, &a, &line, Language::Zh).expect("body");
    assert_eq!(body, line);
}

#[test]
fn dingtalk_signature_matches_an_independent_computation() {
    // Python: quote_plus(b64encode(hmac.new(b"SECtest-secret",
    //   b"1767225600000\nSECtest-secret", sha256).digest()))
    // = base64 "ZD14BLSZrj8IbwsuJI3b91pR1nuVQ8vcF2uWyDin3SE=", url-encoded '=' -> %3D.
    assert_eq!(
        dingtalk_sign("SECtest-secret", 1_767_225_600_000),
        "ZD14BLSZrj8IbwsuJI3b91pR1nuVQ8vcF2uWyDin3SE%3D"
    );
    assert_eq!(
        dingtalk_signed_url("https://h/robot/send?access_token=T", "SECtest-secret", 1_767_225_600_000),
        "https://h/robot/send?access_token=T&timestamp=1767225600000&sign=ZD14BLSZrj8IbwsuJI3b91pR1nuVQ8vcF2uWyDin3SE%3D"
    );
}

#[test]
fn robot_replies_are_classified() {
    let w = WebhookFormat::Wecom;
    let d = WebhookFormat::Dingtalk;
    assert_eq!(robot_verdict(w, r#"{"errcode":0,"errmsg":"ok"}"#), Ok(()));
    assert_eq!(
        robot_verdict(w, r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#),
        Err((
            Verdict::Retry,
            "errcode 45009: api freq out of limit".into()
        ))
    );
    assert_eq!(
        robot_verdict(d, r#"{"errcode":130101,"errmsg":"send too fast"}"#),
        Err((Verdict::Retry, "errcode 130101: send too fast".into()))
    );
    assert_eq!(
        robot_verdict(d, r#"{"errcode":310000,"errmsg":"sign not match"}"#),
        Err((Verdict::Reject, "errcode 310000: sign not match".into()))
    );
    assert_eq!(
        robot_verdict(w, "<html>login</html>").map_err(|e| e.0),
        Err(Verdict::Misconfigured)
    );
    assert_eq!(robot_verdict(WebhookFormat::Generic, "anything"), Ok(()));
}

#[test]
fn rate_limit_is_a_sliding_window() {
    let t0 = tokio::time::Instant::now();
    let mut l = RateLimit::new(2);
    assert_eq!(l.wait(t0), Duration::ZERO);
    l.record(t0);
    l.record(t0 + Duration::from_secs(10));
    // Third send at t0+20 s must wait until the first leaves the 60 s window: 40 s.
    assert_eq!(
        l.wait(t0 + Duration::from_secs(20)),
        Duration::from_secs(40)
    );
    assert_eq!(l.wait(t0 + RATE_WINDOW), Duration::ZERO);
}

// ----------------------------------------------------------------------------------------------
// Delivery against a scripted receiver
// ----------------------------------------------------------------------------------------------

/// One request as the receiver saw it: request target (path and query) and body.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Answer each connection with the next scripted `(status, body)`, recording the request.
async fn receiver(script: Vec<(u16, &'static str)>) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        for (status, answer) in script {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let mut r = BufReader::new(stream);
            let mut first = String::new();
            r.read_line(&mut first).await.expect("request line");
            let target = first.split(' ').nth(1).unwrap_or_default().to_owned();
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).await.expect("header");
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().expect("length");
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).await.expect("body");
            log.lock().expect("lock").push((target, body));
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            r.get_mut()
                .write_all(reply.as_bytes())
                .await
                .expect("reply");
            r.get_mut().shutdown().await.ok();
        }
    });
    (addr, seen)
}

/// Start a sink for `toml_text` (with `url_env = "HOOK_URL"` pointing at `url`) over a fresh
/// spool holding `alerts` as one chunk; return when its backlog is empty.
async fn run_until_settled(
    toml_text: &str,
    url: String,
    alerts: &[Alert],
) -> (Arc<Spool>, Arc<Metrics>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Arc::new(
        Spool::open(
            &dir.path().join("spool.redb"),
            &SpoolConfig::default(),
            &["hook".to_owned()],
        )
        .expect("spool"),
    );
    let env = move |k: &str| {
        if k == "HOOK_URL" {
            Ok(url.clone())
        } else {
            Err(std::env::VarError::NotPresent)
        }
    };
    let cfg = parse(&format!(
        "name = \"hook\"\nurl_env = \"HOOK_URL\"\nretry_initial = \"20ms\"\nretry_max = \"100ms\"\n{toml_text}"
    ))
    .validate_with_env("sinks[0]", &env)
    .expect("valid");
    let mut body = Vec::new();
    for a in alerts {
        body.extend(serde_json::to_vec(a).expect("json"));
        body.push(b'\n');
    }
    spool
        .append(
            Stream::Alerts,
            &body,
            u32::try_from(alerts.len()).expect("n"),
        )
        .expect("append");
    let metrics = Arc::new(Metrics::new());
    let sink = WebhookSink::new(cfg, Arc::clone(&spool), Arc::clone(&metrics)).expect("sink");
    let stop = CancellationToken::new();
    let task = tokio::spawn(sink.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while spool.stats().sinks["hook"].alerts_records > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "backlog not drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.expect("join");
    // Keep the temp dir alive as long as the spool.
    std::mem::forget(dir);
    (spool, metrics)
}

#[tokio::test]
async fn a_500_is_retried_with_the_same_body_then_acked() {
    let (addr, seen) = receiver(vec![(500, "busy"), (200, "")]).await;
    let a = sample_alert();
    let (spool, metrics) = run_until_settled(
        "format = \"generic\"",
        format!("http://{addr}/alerts"),
        std::slice::from_ref(&a),
    )
    .await;
    let seen = seen.lock().expect("lock").clone();
    let line = serde_json::to_vec(&a).expect("json");
    assert_eq!(
        seen,
        vec![
            ("/alerts".to_owned(), line.clone()),
            ("/alerts".to_owned(), line)
        ]
    );
    assert_eq!(metrics.get(RETRIES, &[("sink", "hook")]), 1);
    assert!(spool.dead_letters().expect("dl").is_empty());
}

#[tokio::test]
async fn a_400_sends_the_batch_to_the_dead_letters_with_the_answer() {
    let (addr, seen) = receiver(vec![(400, "bad alert"), (200, "")]).await;
    let a = sample_alert();
    let mut b = sample_alert();
    b.seq = 1;
    b.state = AlertState::Escalated;
    let (spool, _) = run_until_settled(
        "format = \"generic\"",
        format!("http://{addr}/"),
        &[a.clone(), b],
    )
    .await;
    assert_eq!(
        seen.lock().expect("lock").len(),
        2,
        "the second event is still sent"
    );
    let dl = spool.dead_letters().expect("dl");
    assert_eq!(dl.len(), 1);
    assert_eq!(
        dl[0].reason,
        format!(
            "1 event(s) refused, 1 delivered: {}/0: HTTP 400: bad alert",
            a.id
        )
    );
}

#[tokio::test]
async fn wecom_rate_limit_code_is_retried_and_other_codes_are_refused() {
    let (addr, seen) = receiver(vec![
        (200, r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#),
        (200, r#"{"errcode":0,"errmsg":"ok"}"#),
        (200, r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#),
    ])
    .await;
    let a = sample_alert();
    let mut b = sample_alert();
    b.id = "0000000000000001".into();
    let (spool, metrics) = run_until_settled(
        "format = \"wecom\"",
        format!("http://{addr}/cgi-bin/webhook/send?key=K"),
        &[a, b],
    )
    .await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].0, "/cgi-bin/webhook/send?key=K");
    assert!(seen[0]
        .1
        .starts_with(br#"{"msgtype":"markdown","markdown":{"content":"**"#));
    assert_eq!(metrics.get(RETRIES, &[("sink", "hook")]), 1);
    let dl = spool.dead_letters().expect("dl");
    assert_eq!(
        dl[0].reason,
        "1 event(s) refused, 1 delivered: 0000000000000001/0: errcode 93000: invalid webhook url"
    );
}

#[tokio::test]
async fn dingtalk_requests_are_signed_and_kinds_are_filtered() {
    let (addr, seen) = receiver(vec![(200, r#"{"errcode":0,"errmsg":"ok"}"#)]).await;
    let mut fault = sample_alert();
    fault.kind = AlertKind::DeviceFault;
    fault.id = "00000000000000ff".into();
    let dir_secret = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(dir_secret.path(), "SECtest-secret\n").expect("write");
    let (spool, _) = run_until_settled(
        &format!(
            "format = \"dingtalk\"\nkinds = [\"quality\"]\nsecret_file = \"{}\"",
            dir_secret.path().display()
        ),
        format!("http://{addr}/robot/send?access_token=T"),
        &[fault, sample_alert()],
    )
    .await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "the device fault is not sent to this robot");
    let target = &seen[0].0;
    assert!(
        target.starts_with("/robot/send?access_token=T&timestamp="),
        "{target}"
    );
    // The signature of the timestamp the request carried.
    let ts: i64 = target
        .split("timestamp=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .and_then(|s| s.parse().ok())
        .expect("timestamp");
    assert!(target.ends_with(&format!("&sign={}", dingtalk_sign("SECtest-secret", ts))));
    assert!(spool.dead_letters().expect("dl").is_empty());
}
