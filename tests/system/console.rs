//! The console (issue 9 items 1 and 4) on a running gateway, over 127.0.0.1:
//! - known MQTT readings through a real mosquitto show up in `/metrics` with exactly the counts
//!   sent (parsed by the `prometheus-parse` crate), with the spool backlog of a sink whose store
//!   is down; `/healthz` and `/readyz` answer 200;
//! - with an access token, a request without it (or with another) gets 401 and an empty body,
//!   on every path; with it, `/metrics` answers.

use std::collections::HashMap;
use std::time::Duration;

use anju_system::{free_port, start_gateway, wait_until, Mosquitto};
use anyhow::{ensure, Context as _, Result};
use rumqttc::QoS;

use crate::mqtt_robustness::{self, good, publisher, wait_acked};

/// Readings published in the metrics test.
const SENT: usize = 25;
/// Distinct points they are spread over (so the engine holds this many channels).
const POINTS: usize = 5;

/// The gateway of [`mqtt_robustness::config`] (one MQTT source, subscription `a`:
/// `a/{device}/{point}`; an InfluxDB sink named `influxdb` at `store`) with `console` as its
/// `[console]` section.
fn config(dir: &std::path::Path, broker: &str, store: &str, console: &str) -> String {
    format!(
        "{}\n[console]\n{console}\n",
        mqtt_robustness::config(dir, broker, store, "")
    )
}

/// One scrape of `/metrics`, parsed; `(name, sorted labels) -> value`.
pub(crate) struct Scraped {
    values: HashMap<(String, Vec<(String, String)>), f64>,
    helped: Vec<String>,
}

impl Scraped {
    fn parse(text: &str) -> Result<Self> {
        ensure!(
            text.ends_with("# EOF\n"),
            "no OpenMetrics EOF marker:\n{text}"
        );
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
        let mut values = HashMap::new();
        for s in scrape.samples {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => anyhow::bail!("{}: unexpected sample kind {other:?}", s.metric),
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            values.insert((s.metric, labels), v);
        }
        Ok(Self {
            values,
            helped: scrape.docs.into_keys().collect(),
        })
    }

    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.values.get(&(name.to_owned(), labels)).copied()
    }
}

pub(crate) async fn scrape(client: &reqwest::Client, base: &str) -> Result<Scraped> {
    let response = client.get(format!("{base}/metrics")).send().await?;
    ensure!(
        response.status() == 200,
        "/metrics answered {}",
        response.status()
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        content_type.starts_with("application/openmetrics-text"),
        "/metrics content type {content_type}"
    );
    Scraped::parse(&response.text().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_metrics_count_exactly_the_readings_sent() -> Result<()> {
    anju_system::init_tracing();
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    // Nothing listens on the store's port: every reading stays in the spool as backlog.
    let store = format!("http://127.0.0.1:{}", free_port()?);
    let listen = format!("listen = \"127.0.0.1:{port}\"");
    let gw = start_gateway(
        &config(dir.path(), &broker.addr().to_string(), &store, &listen),
        dir.path(),
    )?;
    gw.wait_for_mqtt_session().await?;
    let (client, acked) = publisher(broker.addr(), "pub-console");
    let t0 = anju_gateway::model::now_ns() / 1_000_000;
    for i in 0..SENT {
        #[allow(clippy::cast_possible_wrap)]
        let ts = t0 + i as i64;
        client
            .publish(
                format!("a/pier-1/p{}", i % POINTS),
                QoS::AtLeastOnce,
                false,
                good(i, ts),
            )
            .await?;
    }
    wait_acked(&acked, SENT).await?;

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    #[allow(clippy::cast_precision_loss)]
    let sent = SENT as f64;
    wait_until(
        Duration::from_secs(30),
        "every reading spooled, seen in /metrics",
        || async {
            scrape(&http, &base)
                .await
                .is_ok_and(|s| s.get("anju_readings_spooled_total", &[]) == Some(sent))
        },
    )
    .await?;
    let s = scrape(&http, &base).await?;
    let sub = [("subscription", "a")];
    for (name, labels, want) in [
        ("anju_mqtt_messages_total", &sub[..], sent),
        ("anju_mqtt_readings_total", &sub[..], sent),
        ("anju_readings_spooled_total", &[][..], sent),
        (
            "anju_spool_backlog_records",
            &[("sink", "influxdb"), ("stream", "points")][..],
            sent,
        ),
        #[allow(clippy::cast_precision_loss)]
        ("anju_engine_channels", &[][..], POINTS as f64),
        ("anju_spool_available", &[][..], 1.0),
    ] {
        let got = s.get(name, labels);
        ensure!(got == Some(want), "{name}{labels:?}: {got:?}, want {want}");
    }
    // Nothing was delivered: a labelled counter appears once it counted, so it is absent.
    let written = s.get("anju_influx_written_records_total", &[("sink", "influxdb")]);
    ensure!(written.unwrap_or(0.0) == 0.0, "delivered {written:?}");
    ensure!(s.get("anju_uptime_seconds", &[]).is_some_and(|v| v >= 0.0));
    ensure!(s.get("anju_spool_file_bytes", &[]).is_some_and(|v| v > 0.0));
    // Every counter of the gateway is exported, under its name with the prefix.
    for c in anju_gateway::metrics::Counter::ALL {
        let family = format!("anju_{}", c.name().trim_end_matches("_total"));
        ensure!(s.helped.contains(&family), "{family} is not in /metrics");
    }

    // The overview page shows each point's last published value (message i went to point
    // i % POINTS with value i) once the engine's next snapshot is out (`VIEW_INTERVAL`).
    let want: Vec<(String, String)> = (0..POINTS)
        .map(|p| {
            let last = (0..SENT).rev().find(|i| i % POINTS == p).unwrap_or(0);
            (format!(">p{p}</a></td>"), format!(">{last} mm<"))
        })
        .collect();
    let shows_all = |page: &str| {
        let rows: Vec<&str> = page.split("<tr").collect();
        want.iter().all(|(point, value)| {
            rows.iter()
                .any(|row| row.contains(point.as_str()) && row.contains(value.as_str()))
        })
    };
    wait_until(
        Duration::from_secs(10),
        "the overview page to show every point's last value",
        || async {
            match http.get(format!("{base}/?lang=en")).send().await {
                Ok(r) => r.text().await.is_ok_and(|page| shows_all(&page)),
                Err(_) => false,
            }
        },
    )
    .await?;
    let page = http.get(format!("{base}/")).send().await?.text().await?;
    ensure!(page.contains("pier-1"), "the device is not on the page");
    ensure!(
        page.contains("当前告警"),
        "the page is not in Chinese by default"
    );

    let health = http.get(format!("{base}/healthz")).send().await?;
    ensure!(health.status() == 200, "/healthz {}", health.status());
    let ready = http.get(format!("{base}/readyz")).send().await?;
    let status = ready.status();
    let body = ready.text().await?;
    ensure!(status == 200, "/readyz {status}: {body}");
    gw.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_with_a_token_answers_401_and_nothing_else_without_it() -> Result<()> {
    anju_system::init_tracing();
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("console.token");
    std::fs::write(&token_file, "0123456789abcdef\n")?;
    let port = free_port()?;
    let store = format!("http://127.0.0.1:{}", free_port()?);
    let console = format!(
        "listen = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"",
        token_file.display()
    );
    let gw = start_gateway(
        &config(dir.path(), &broker.addr().to_string(), &store, &console),
        dir.path(),
    )?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(10), "the console to listen", || async {
        http.get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await?;
    for path in [
        "/", "/config", "/metrics", "/healthz", "/readyz", "/nowhere",
    ] {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer 0123456789abcde"),
            Some("Basic MDEyMzQ1Njc4OWFiY2RlZg=="),
        ] {
            let mut request = http.get(format!("{base}{path}"));
            if let Some(a) = auth {
                request = request.header("authorization", a);
            }
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            ensure!(
                status == 401 && body.is_empty(),
                "{path} with {auth:?}: {status}, {} bytes",
                body.len()
            );
        }
    }
    let response = http
        .get(format!("{base}/metrics"))
        .header("authorization", "Bearer 0123456789abcdef")
        .send()
        .await
        .context("scrape with the token")?;
    ensure!(
        response.status() == 200,
        "with the token: {}",
        response.status()
    );
    Scraped::parse(&response.text().await?)?;
    // The configuration page says a token is required and never shows it.
    let page = http
        .get(format!("{base}/config"))
        .header("authorization", "Bearer 0123456789abcdef")
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        page.contains("access token &lt;redacted&gt; required"),
        "{page}"
    );
    ensure!(
        !page.contains("0123456789abcdef"),
        "the token is on the page"
    );

    // A browser sends no Authorization header: its page request goes to the sign-in form,
    // the token entered there gives it a session cookie, and the cookie opens the pages.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let html = "text/html,application/xhtml+xml";
    let response = browser
        .get(format!("{base}/alerts?lang=en"))
        .header("accept", html)
        .send()
        .await?;
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        response.status() == 303 && location == "/login?next=%2Falerts%3Flang%3Den",
        "a page without a session: {} to {location:?}",
        response.status()
    );
    let form = browser
        .get(format!("{base}{location}"))
        .header("accept", html)
        .send()
        .await?;
    let form_page = form.text().await?;
    ensure!(
        form_page.contains("name=\"token\"") && form_page.contains("value=\"/alerts?lang=en\""),
        "{form_page}"
    );
    let sign_in = |token: &'static str, next: &'static str| {
        browser
            .post(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}&next={next}&lang=en"))
            .send()
    };
    let wrong = sign_in("0123456789abcde", "%2Falerts").await?;
    ensure!(wrong.status() == 401, "a wrong token: {}", wrong.status());
    ensure!(
        wrong.headers().get("set-cookie").is_none(),
        "a cookie for a wrong token"
    );
    // `next` is only ever a path of this console (no open redirect).
    let right = sign_in("0123456789abcdef", "%2F%2Fevil.example%2F").await?;
    let cookie = right
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        right.status() == 303
            && right
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                == Some("/")
            && cookie.starts_with("anju_session=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "the right token: {} {cookie:?} to {:?}",
        right.status(),
        right.headers().get("location")
    );
    let session = cookie.split(';').next().unwrap_or_default().to_owned();
    let page = browser
        .get(format!("{base}/?lang=en"))
        .header("accept", html)
        .header("cookie", &session)
        .send()
        .await?;
    ensure!(page.status() == 200, "with the session: {}", page.status());
    ensure!(
        page.text().await?.contains("site-01"),
        "the overview with the session"
    );
    // A forged or altered cookie opens nothing; a post from another site signs nobody in.
    let (expiry, _) = session.split_once('.').unwrap_or_default();
    let forged = format!("{expiry}.{}", "0".repeat(64));
    let refused = browser
        .get(format!("{base}/metrics"))
        .header("cookie", &forged)
        .send()
        .await?;
    ensure!(
        refused.status() == 401,
        "a forged cookie: {}",
        refused.status()
    );
    let foreign = browser
        .post(format!("{base}/login"))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=0123456789abcdef&next=%2F")
        .send()
        .await?;
    ensure!(
        foreign.status() == 403,
        "a cross-site sign-in: {}",
        foreign.status()
    );
    gw.stop().await?;
    Ok(())
}

/// 消警 (issue 9 item 2) end to end: an alert raised by readings through mosquitto shows on the
/// overview with its form; the form's post acknowledges it; the acknowledgement event reaches
/// the MQTT alert sink (the bureau's side) with who and the note, and the store as a `state`
/// 4 point tagged with who; the page then shows it acknowledged. A post from another origin
/// and a post without a name are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_acknowledged_on_the_console_reaches_the_alert_sink_and_the_store() -> Result<()> {
    anju_system::init_tracing();
    let broker = Mosquitto::start()?;
    let vm = anju_system::VictoriaMetrics::start()?;
    let upstream = crate::alerts::alert_subscriber(broker.addr(), "anju/+/alerts").await?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let extra = format!(
        r#"
[alerts]
language = "zh"

[[alerts.rules]]
name = "settlement-total"
kind = "absolute"
select = {{ kind = "settlement" }}
upper = {{ alarm = 30.0, red = 1.0 }}
confirm = {{ count = 1 }}

[[sinks]]
type = "mqtt"
host = "127.0.0.1"
port = {mqtt}
client_id = "anju-gw-test-alerts"
"#,
        mqtt = broker.addr().port()
    );
    let config = format!(
        "{}{extra}\n[console]\nlisten = \"127.0.0.1:{port}\"\n",
        mqtt_robustness::config(dir.path(), &broker.addr().to_string(), &vm.url(), "")
    );
    let gw = start_gateway(&config, dir.path())?;
    gw.wait_for_mqtt_session().await?;
    let (client, acked) = publisher(broker.addr(), "pub-ack");
    let t0 = anju_gateway::model::now_ns() / 1_000_000;
    // 35 mm on pier-1/p0: above the 30 mm alarm, raised red at once (confirm count 1).
    client
        .publish("a/pier-1/p0", QoS::AtLeastOnce, false, good(35, t0))
        .await?;
    wait_acked(&acked, 1).await?;
    let raised = || {
        crate::alerts::snapshot(&upstream)
            .into_iter()
            .find(|a| a["state"] == "raised" && a["rule"] == "settlement-total")
    };
    wait_until(
        Duration::from_secs(30),
        "the raise at the alert sink",
        || async { raised().is_some() },
    )
    .await?;
    let id = raised()
        .and_then(|a| a["id"].as_str().map(str::to_owned))
        .context("alert id")?;

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until(
        Duration::from_secs(10),
        "the alert and its form on the page",
        || async {
            let page = match http.get(format!("{base}/")).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            page.contains(&format!(r#"name="id" value="{id}""#))
        },
    )
    .await?;
    let foreign = post_ack(&http, &base, &id, "http://example.org", "监理 王工").await?;
    ensure!(foreign.0 == 403, "cross-site post: {}", foreign.0);
    let nobody = post_ack(&http, &base, &id, &base, "").await?;
    ensure!(
        nobody.0 == 422,
        "post without a name: {} {}",
        nobody.0,
        nobody.1
    );
    ensure!(nobody.1.contains("请填写消警人"), "{}", nobody.1);
    let done = post_ack(&http, &base, &id, &base, "监理 王工").await?;
    ensure!(
        done.0 == 200 && done.1.contains("已消警"),
        "{} {}",
        done.0,
        done.1
    );

    let ack_event = || {
        crate::alerts::snapshot(&upstream)
            .into_iter()
            .find(|a| a["state"] == "acknowledged" && a["id"] == id.as_str())
    };
    wait_until(
        Duration::from_secs(30),
        "the acknowledgement at the alert sink",
        || async { ack_event().is_some() },
    )
    .await?;
    let event = ack_event().context("acknowledgement")?;
    ensure!(event["seq"] == 1, "seq {}", event["seq"]);
    ensure!(event["level"] == "red", "level {}", event["level"]);
    ensure!(
        event["ack"]["by"] == "监理 王工",
        "by {}",
        event["ack"]["by"]
    );
    ensure!(
        event["ack"]["note"] == "现场核查，测点被压，已复位",
        "note {}",
        event["ack"]["note"]
    );
    ensure!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("【消警】") && m.contains("监理 王工")),
        "message {}",
        event["message"]
    );
    wait_until(
        Duration::from_secs(30),
        "the acknowledgement in the store",
        || async {
            vm.export("alerts_state").await.is_ok_and(|series| {
                series.iter().any(|s| {
                    s.metric.get("alert_id") == Some(&id)
                        && s.metric.get("ack_by").map(String::as_str) == Some("监理 王工")
                        && s.values == [4.0]
                })
            })
        },
    )
    .await?;
    let says_who = || async {
        match http.get(format!("{base}/")).send().await {
            Ok(r) => r
                .text()
                .await
                .is_ok_and(|p| p.contains("已消警：监理 王工")),
            Err(_) => false,
        }
    };
    wait_until(
        Duration::from_secs(10),
        "the page to say who acknowledged",
        says_who,
    )
    .await?;
    // Committed with the rule state: a restarted gateway still shows it acknowledged.
    gw.stop().await?;
    let gw = start_gateway(&config, dir.path())?;
    wait_until(
        Duration::from_secs(20),
        "the acknowledgement after a restart",
        says_who,
    )
    .await?;
    gw.stop().await?;
    Ok(())
}

/// Post the acknowledgement form for alert `id` from a page of `origin` (the console's own:
/// `base`) for `by`: status and body.
pub(crate) async fn post_ack(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    origin: &str,
    by: &str,
) -> Result<(u16, String)> {
    let form = [
        ("id", id),
        ("by", by),
        ("note", "现场核查，测点被压，已复位"),
        ("lang", "zh"),
    ];
    let r = http
        .post(format!("{base}/alerts/ack"))
        .header("Origin", origin)
        .form(&form)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// Issue 9: the daily report is announced where the bureau reads: a gateway started after the
/// report time with yesterday's report missing makes it at once, and its summary arrives in the
/// WeCom group (a local receiver speaking the group robot's protocol) as a markdown message
/// naming the day, the site and where to read the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_report_is_announced_to_the_wecom_group() -> Result<()> {
    anju_system::init_tracing();
    let broker = Mosquitto::start()?;
    let (hook_url, hooks) = crate::alerts::webhook_receiver().await?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let store = format!("http://127.0.0.1:{}", free_port()?);
    // 00:00: past the report time whenever the test runs, so yesterday's report is due at start.
    let console = format!(
        "listen = \"127.0.0.1:{port}\"\n[console.report]\nat = \"00:00\"\n\n[[sinks]]\ntype = \"webhook\"\nformat = \"wecom\"\nurl_env = \"ANJU_TEST_REPORT_HOOK\"\n"
    );
    std::env::set_var("ANJU_TEST_REPORT_HOOK", &hook_url);
    let gw = start_gateway(
        &config(dir.path(), &broker.addr().to_string(), &store, &console),
        dir.path(),
    )?;
    // Yesterday in local time (UTC+8), as the report names it.
    let local = std::time::SystemTime::now() + Duration::from_secs(8 * 3600)
        - Duration::from_secs(24 * 3600);
    let yesterday = humantime::format_rfc3339(local).to_string()[..10].to_owned();
    let announced = wait_until(
        Duration::from_secs(30),
        "the report's notice on the webhook",
        || async {
            crate::alerts::snapshot(&hooks).iter().any(|b| {
                b["msgtype"] == "markdown"
                    && b["markdown"]["content"]
                        .as_str()
                        .is_some_and(|c| c.contains("【日报】") && c.contains(&yesterday))
            })
        },
    )
    .await;
    let bodies = crate::alerts::snapshot(&hooks);
    gw.stop().await?;
    announced.with_context(|| format!("webhook bodies: {bodies:?}"))?;
    let content = bodies
        .iter()
        .filter_map(|b| b["markdown"]["content"].as_str())
        .find(|c| c.contains("【日报】"))
        .unwrap_or_default();
    ensure!(
        content.contains("工地 site-01")
            && content.contains(&format!("/report?date={yesterday}"))
            && dir
                .path()
                .join("reports")
                .join(format!("{yesterday}.html"))
                .exists(),
        "{content}"
    );
    Ok(())
}
