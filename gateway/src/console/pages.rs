//! The console's pages, rendered on the server with maud (issue 9 item 2): HTML compiled into
//! the binary, no script, no CDN (the site LAN has no internet), Chinese by default and English
//! with `?lang=en`, refreshed by the browser every [`REFRESH_SECONDS`].
//!
//! Owns the overview page: site and gateway, version and uptime, the spool (writable, size,
//! backlog per sink, dead letters), every active alert with its level colour, and every device
//! with its channels (latest value, unit, quality, age) and its Modbus request and error counts.
//! It reads only what it is given ([`Overview`]): the engine's latest [`SiteView`], the spool's
//! counts and the counters. It does not own routing or the token check ([`super::router`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::alert::{Alert, AlertState, Level, MAX_ACK_BY_CHARS, MAX_ACK_NOTE_CHARS};
use crate::engine::command::Acked;
use crate::engine::rules::AckRefused;
use crate::engine::summary::human_bytes;
use crate::engine::view::{ChannelView, SiteView};
use crate::metrics::{Counter, CounterSample};
use crate::model::{Quality, TimestampNs, NANOS_PER_SEC};
use crate::spool::SpoolStats;

/// The browser reloads a page this often (seconds): values are live within this plus the
/// engine's `VIEW_INTERVAL`.
pub const REFRESH_SECONDS: u32 = 5;

/// Times are shown in China Standard Time, the sites' local time (UTC+8, no daylight saving).
pub const DISPLAY_OFFSET_SECONDS: i64 = 8 * 3600;

/// A channel whose last reading is older than this is shown as late (grey): most devices on
/// site report every minute to every 10 minutes; CIGEM nodes hourly, so an hour is the floor.
pub const LATE_AFTER: Duration = Duration::from_secs(2 * 3600);

/// The page's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// 中文 (the default: the console's users are Chinese site staff).
    Zh,
    /// English.
    En,
}

impl Lang {
    /// `lang=en` in a query string asks for English; anything else is Chinese.
    #[must_use]
    pub fn from_query(query: Option<&str>) -> Self {
        let en = query.is_some_and(|q| q.split('&').any(|kv| kv == "lang=en"));
        if en {
            Self::En
        } else {
            Self::Zh
        }
    }

    pub(crate) const fn pick(self, zh: &'static str, en: &'static str) -> &'static str {
        match self {
            Self::Zh => zh,
            Self::En => en,
        }
    }
}

/// Who and what the page is about.
#[derive(Debug, Clone)]
pub struct Overview<'a> {
    /// The site (`site`).
    pub site: &'a str,
    /// This gateway (`gateway_id`).
    pub gateway: &'a str,
    /// Time since the gateway started.
    pub uptime: Duration,
    /// Gateway time now.
    pub now_ns: TimestampNs,
    /// The engine's latest snapshot.
    pub view: &'a SiteView,
    /// The spool's counts.
    pub spool: &'a SpoolStats,
    /// Every counter (`Metrics::snapshot`).
    pub counters: &'a [CounterSample],
}

/// Colour of a level's badge (the usual blue / yellow / orange / red of Chinese warning levels).
pub(crate) const fn level_colour(level: Level) -> &'static str {
    match level {
        Level::Blue => "#1e6fd9",
        Level::Yellow => "#d9a400",
        Level::Orange => "#e8730c",
        Level::Red => "#c81e1e",
    }
}

pub(crate) fn level_name(level: Level, lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => level.name_zh(),
        Lang::En => level.name_en(),
    }
}

/// A quality in words (README, *Quality codes*).
pub(crate) fn quality_words(q: Quality, lang: Lang) -> &'static str {
    match q {
        Quality::Good => lang.pick("正常", "good"),
        Quality::Exception(_) => lang.pick("Modbus 异常应答", "Modbus exception"),
        Quality::Timeout => lang.pick("超时", "timeout"),
        Quality::CommError => lang.pick("通信错误", "communication error"),
        Quality::DeviceFault(_) => lang.pick("设备报告故障", "device fault"),
        Quality::NotFinite => lang.pick("非数值", "not a number"),
        Quality::NotConvertible => lang.pick("无法换算", "not convertible"),
        Quality::CorrectionUnavailable => lang.pick("修正输入缺失", "correction unavailable"),
        Quality::ClockUnsynchronised => lang.pick("网关时钟未同步", "gateway clock unsynchronised"),
        Quality::OutOfRange => lang.pick("超出量程", "out of range"),
        Quality::Stuck => lang.pick("数值停滞", "stuck"),
        Quality::Spike => lang.pick("突跳", "spike"),
        Quality::DerivedInputBad => lang.pick("输入不可用", "input bad"),
        Quality::InitialValueMissing => lang.pick("缺初始值", "initial value missing"),
        Quality::Refused(reason) => lang.pick(reason.name_zh(), reason.as_str()),
    }
}

/// `YYYY-MM-DD HH:MM:SS` in [`DISPLAY_OFFSET_SECONDS`]; empty for a time before 1970.
pub(crate) fn local_time(ns: TimestampNs) -> String {
    let Ok(local) = u64::try_from(ns / NANOS_PER_SEC + DISPLAY_OFFSET_SECONDS) else {
        return String::new();
    };
    let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(local));
    // "2026-11-30T15:43:10Z" → "2026-11-30 15:43:10".
    text.to_string().trim_end_matches('Z').replacen('T', " ", 1)
}

/// How long ago, to the second, in short form (`3m 12s`).
fn age(now: TimestampNs, then: TimestampNs) -> String {
    let secs = u64::try_from((now - then) / NANOS_PER_SEC).unwrap_or(0);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// A value with the precision a site reads (3 significant decimals at most, no trailing zeros).
pub(crate) fn value_text(v: f64) -> String {
    let mut s = format!("{v:.3}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    if s == "-0" {
        s = "0".to_owned();
    }
    s
}

/// Per device: Modbus requests, and errors by reason.
#[derive(Debug, Default)]
pub(crate) struct DeviceCounts {
    pub(crate) requests: u64,
    pub(crate) errors: BTreeMap<String, u64>,
}

pub(crate) fn device_counts(counters: &[CounterSample]) -> BTreeMap<&str, DeviceCounts> {
    let mut out: BTreeMap<&str, DeviceCounts> = BTreeMap::new();
    for c in counters {
        let label = |name: &str| {
            c.labels
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        let Some(device) = label("device") else {
            continue;
        };
        match c.counter {
            Counter::ModbusRequests => out.entry(device).or_default().requests += c.value,
            Counter::ModbusErrors => {
                let reason = label("reason").unwrap_or_default().to_owned();
                *out.entry(device)
                    .or_default()
                    .errors
                    .entry(reason)
                    .or_default() += c.value;
            }
            _ => {}
        }
    }
    out
}

pub(crate) const STYLE: &str = "body{font-family:system-ui,'Noto Sans CJK SC','Microsoft YaHei',sans-serif;margin:1.2em;color:#1d1d1f}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
table{border-collapse:collapse;width:100%;font-size:.92em}th,td{border-bottom:1px solid #ddd;padding:.25em .5em;text-align:left}\
th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.badge{color:#fff;border-radius:3px;padding:.05em .5em;font-weight:600}\
.bad{color:#c81e1e}.late{color:#888}.meta{color:#555}.ok{color:#1a7f37}\
tr.device td{background:#fafafa;font-weight:600}";

/// The overview page.
#[must_use]
pub fn overview(o: &Overview<'_>, lang: Lang) -> Markup {
    let title = format!("{} {} · {}", lang.pick("工地", "Site"), o.site, o.gateway);
    let other = match lang {
        Lang::Zh => ("?lang=en", "English"),
        Lang::En => ("?", "中文"),
    };
    html! {
        (DOCTYPE)
        html lang=(lang.pick("zh-CN", "en")) {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                p.meta {
                    (lang.pick("网关版本 ", "Gateway version ")) (env!("CARGO_PKG_VERSION"))
                    " · " (lang.pick("已运行 ", "up ")) (humantime::format_duration(Duration::from_secs(o.uptime.as_secs())))
                    " · " (lang.pick("页面时间 ", "page time ")) (local_time(o.now_ns)) " (UTC+8)"
                    " · " a href=(lang.pick("/alerts", "/alerts?lang=en")) { (lang.pick("告警记录", "alert history")) }
                    " · " a href=(lang.pick("/reports", "/reports?lang=en")) { (lang.pick("监理日报", "daily reports")) }
                    " · " a href=(lang.pick("/config", "/config?lang=en")) { (lang.pick("配置", "configuration")) }
                    " · " a href=(other.0) { (other.1) }
                }
                (spool_section(o.spool, lang))
                (alerts_section(&o.view.alerts, o.now_ns, lang))
                (devices_section(o, lang))
            }
        }
    }
}

fn spool_section(s: &SpoolStats, lang: Lang) -> Markup {
    html! {
        h2 { (lang.pick("本地缓存（spool）", "Spool")) }
        p {
            @if s.available {
                span.ok { (lang.pick("可写", "writable")) }
            } @else {
                span.bad { (lang.pick("不可写：读数暂存内存，未确认上游", "NOT writable: readings held in memory, nothing acknowledged upstream")) }
            }
            " · " (lang.pick("文件 ", "file ")) (human_bytes(s.file_bytes))
            " · " (lang.pick("死信 ", "dead letters ")) (s.dead_letter_count)
            @if s.dropped_records_total > 0 {
                " · " span.bad { (lang.pick("因空间丢弃 ", "dropped for room ")) (s.dropped_records_total) }
            }
        }
        @if !s.sinks.is_empty() {
            table {
                tr {
                    th { (lang.pick("转发目标", "Sink")) }
                    th { (lang.pick("待发读数", "Readings waiting")) }
                    th { (lang.pick("待发告警", "Alerts waiting")) }
                }
                @for (name, b) in &s.sinks {
                    tr {
                        td { (name) }
                        td.num { (b.points_records) }
                        td.num { (b.alerts_records) }
                    }
                }
            }
        }
    }
}

pub(crate) fn alerts_section(alerts: &[Alert], now: TimestampNs, lang: Lang) -> Markup {
    html! {
        h2 { (lang.pick("当前告警", "Active alerts")) " (" (alerts.len()) ")" }
        @if alerts.is_empty() {
            p.ok { (lang.pick("无", "none")) }
        } @else {
            table {
                tr {
                    th { (lang.pick("级别", "Level")) }
                    th { (lang.pick("规则", "Rule")) }
                    th { (lang.pick("测点", "Channel")) }
                    th { (lang.pick("数值", "Value")) }
                    th { (lang.pick("阈值", "Threshold")) }
                    th { (lang.pick("开始", "Since")) }
                    th { (lang.pick("说明", "Message")) }
                    th { (lang.pick("消警", "Acknowledge")) }
                }
                @for a in alerts {
                    tr {
                        td { span.badge style={"background:" (level_colour(a.level))} { (level_name(a.level, lang)) } }
                        td { (a.rule) }
                        td { (a.channel) }
                        td.num { @if let Some(v) = a.value { (value_text(v)) " " (a.unit) } }
                        td.num { @if let Some(t) = a.threshold { (value_text(t)) " " (a.unit) } }
                        td { (local_time(a.started_at)) br; span.meta { (age(now, a.started_at)) } }
                        td { (a.message) }
                        td { (ack_cell(a, lang)) }
                    }
                }
            }
        }
    }
}

/// The effective configuration page: `text` is what `gateway check` prints for the running
/// config (it names no secret: they are read from the environment or files and shown as
/// redacted).
#[must_use]
pub fn config(site: &str, gateway: &str, text: &str, lang: Lang) -> Markup {
    let title = format!(
        "{} {} · {} · {}",
        lang.pick("工地", "Site"),
        site,
        gateway,
        lang.pick("配置", "configuration")
    );
    document(
        &title,
        lang,
        html! {
            p.meta {
                a href=(lang.pick("/", "/?lang=en")) { (lang.pick("返回总览", "Back to the overview")) }
                " · " (lang.pick("与 `gateway check` 输出相同；密钥不显示", "as `gateway check` prints it; secrets are never shown"))
            }
            pre { (text) }
        },
    )
}

/// A plain page: `title` as the document's title and heading, then `body`.
fn document(title: &str, lang: Lang, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.pick("zh-CN", "en")) {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                (body)
            }
        }
    }
}

/// The form asking for the console's access token (`wrong`: the last one entered was not it);
/// it posts to `/login` and comes back to `next`.
#[must_use]
pub fn login(site: &str, next: &str, wrong: bool, lang: Lang) -> Markup {
    let title = format!(
        "{} {} · {}",
        lang.pick("工地", "Site"),
        site,
        lang.pick("控制台登录", "console sign-in")
    );
    document(
        &title,
        lang,
        html! {
            @if wrong {
                p.bad { (lang.pick("访问令牌不正确", "That is not the access token")) }
            }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                input type="hidden" name="lang" value=(lang.pick("zh", "en"));
                input type="password" name="token" required autofocus size="32"
                    autocomplete="current-password"
                    placeholder=(lang.pick("访问令牌（见网关配置 token_env / token_file）", "access token (the gateway's token_env / token_file)"));
                " "
                button type="submit" { (lang.pick("登录", "Sign in")) }
            }
            p.meta { (lang.pick("登录后 12 小时内有效；网关重启后需重新登录。", "Valid for 12 hours; signing in again is needed after the gateway restarts.")) }
        },
    )
}

/// Who acknowledged the alert (when its latest event is the acknowledgement), and the form to
/// acknowledge it (again).
fn ack_cell(a: &Alert, lang: Lang) -> Markup {
    html! {
        @if let (AlertState::Acknowledged, Some(ack)) = (a.state, &a.ack) {
            p.ok {
                (lang.pick("已消警：", "acknowledged by ")) (ack.by) " · " (local_time(ack.at))
                @if !ack.note.is_empty() { br; span.meta { (ack.note) } }
            }
        }
        form method="post" action="/alerts/ack" {
            input type="hidden" name="id" value=(a.id);
            input type="hidden" name="lang" value=(lang.pick("zh", "en"));
            input name="by" required maxlength=(MAX_ACK_BY_CHARS) size="10"
                placeholder=(lang.pick("姓名/岗位", "name or role"));
            " "
            input name="note" maxlength=(MAX_ACK_NOTE_CHARS) size="16"
                placeholder=(lang.pick("处置说明", "note"));
            " "
            button type="submit" { (lang.pick("消警", "Acknowledge")) }
        }
    }
}

/// The answer to an acknowledgement form: what was stored, or why not; back to the overview
/// after a few seconds. `Err(None)`: the engine did not answer (stopping, or busy beyond
/// the wait).
#[must_use]
pub fn ack_result(outcome: &Result<Acked, Option<AckRefused>>, lang: Lang) -> Markup {
    let back = lang.pick("/", "/?lang=en");
    let (ok, text) = match outcome {
        Ok(acked) if acked.stored => (true, acked.event.message.clone()),
        Ok(acked) => (
            true,
            format!(
                "{} {}",
                acked.event.message,
                lang.pick(
                    "（本地缓存暂不可写：消警已记录在内存，可写后保存并转发）",
                    "(the spool cannot be written now: the acknowledgement is held and stored and forwarded once it can)"
                )
            ),
        ),
        Err(Some(refused)) => (false, refused_text(refused, lang)),
        Err(None) => (
            false,
            lang.pick("网关未应答（正在停止？），请稍后重试", "the gateway did not answer (stopping?); try again").to_owned(),
        ),
    };
    html! {
        (DOCTYPE)
        html lang=(lang.pick("zh-CN", "en")) {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content={"4; url=" (back)};
                title { (lang.pick("消警", "Acknowledge")) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                @if ok {
                    h1.ok { (lang.pick("已消警", "Acknowledged")) }
                } @else {
                    h1.bad { (lang.pick("未能消警", "Not acknowledged")) }
                }
                p { (text) }
                p { a href=(back) { (lang.pick("返回总览", "Back to the overview")) } }
            }
        }
    }
}

fn refused_text(refused: &AckRefused, lang: Lang) -> String {
    match (lang, refused) {
        (Lang::En, r) => r.to_string(),
        (Lang::Zh, AckRefused::NotActive(id)) => {
            format!("告警 {id} 不在当前告警中：已解除，或编号有误")
        }
        (Lang::Zh, AckRefused::NoOne) => "请填写消警人（姓名或岗位）".to_owned(),
        (Lang::Zh, AckRefused::TooLong { what, max }) => {
            let what = if *what == "who" {
                "消警人"
            } else {
                "处置说明"
            };
            format!("{what}超过 {max} 个字，请缩短")
        }
    }
}

fn devices_section(o: &Overview<'_>, lang: Lang) -> Markup {
    let counts = device_counts(o.counters);
    let devices = o.view.by_device();
    html! {
        h2 { (lang.pick("设备与测点", "Devices and channels")) " (" (devices.len()) " / " (o.view.channels.len()) ")" }
        @if devices.is_empty() {
            p.meta { (lang.pick("尚无读数", "no readings yet")) }
        } @else {
            table {
                (channel_head(lang, false))
                @for (device, channels) in &devices {
                    tr.device {
                        td colspan="6" {
                            a href=(device_href(device, None, lang)) { (device) }
                            (device_counts_line(counts.get(device), lang))
                        }
                    }
                    @for c in channels {
                        (channel_row(c, o.now_ns, lang, false))
                    }
                }
            }
        }
    }
}

/// A device's Modbus request and error counts, as spans after its name (nothing for a device
/// that sent no Modbus request: an MQTT node).
pub(crate) fn device_counts_line(counts: Option<&DeviceCounts>, lang: Lang) -> Markup {
    html! {
        @if let Some(c) = counts {
            span.meta { " · " (lang.pick("Modbus 请求 ", "Modbus requests ")) (c.requests) }
            @if !c.errors.is_empty() {
                span.bad { " · " (lang.pick("错误 ", "errors ")) (errors_text(&c.errors)) }
            }
        }
    }
}

/// The header row of a channel table; `raw`: with the column of the device's raw number.
pub(crate) fn channel_head(lang: Lang, raw: bool) -> Markup {
    html! {
        tr {
            th { (lang.pick("测点", "Point")) }
            th { (lang.pick("物理量", "Quantity")) }
            th { (lang.pick("最新值", "Latest value")) }
            @if raw { th { (lang.pick("原始值", "Raw value")) } }
            th { (lang.pick("质量", "Quality")) }
            th { (lang.pick("读数时间", "Reading time")) }
            th { (lang.pick("读数数", "Readings")) }
        }
    }
}

/// One channel's row (see [`channel_head`]): grey ("late") after [`LATE_AFTER`] without a
/// reading.
pub(crate) fn channel_row(c: &ChannelView, now: TimestampNs, lang: Lang, raw: bool) -> Markup {
    let late_ns = i64::try_from(LATE_AFTER.as_nanos()).unwrap_or(i64::MAX);
    let late = now - c.last_ts > late_ns;
    html! {
        tr class={ "channel" @if late { " late" } } {
            td { a href=(channel_href(&c.series.key, None, lang)) { (c.series.point) } }
            td { (c.series.kind) }
            td.num { @if let Some(v) = c.last_value { (value_text(v)) " " (c.series.unit) } @else { "—" } }
            @if raw { td.num { @if let Some(r) = c.last_raw { (value_text(r)) } @else { "—" } } }
            td class=[(!c.last_quality.is_good()).then_some("bad")] {
                (quality_words(c.last_quality, lang))
                @if !c.last_quality.is_good() { " (" (c.last_quality.code()) ")" }
            }
            td { (local_time(c.last_ts)) " · " span.meta { (age(now, c.last_ts)) } }
            td.num { (c.readings) }
        }
    }
}

/// `value` as a URL query value (percent-encoded but for RFC 3986's unreserved characters).
pub(crate) fn query_value(value: &str) -> String {
    /// RFC 3986 unreserved characters stay as they are, so that `lvl-1` reads as `lvl-1`.
    const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, ENCODED).to_string()
}

/// The query string tail for `lang` (`&lang=en` or nothing).
const fn lang_tail(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "",
        Lang::En => "&lang=en",
    }
}

/// The device page of `device` (at `span`, when not the page's default).
pub(crate) fn device_href(device: &str, span: Option<&str>, lang: Lang) -> String {
    let span = span.map_or_else(String::new, |s| format!("&span={s}"));
    format!(
        "/device?name={}{span}{}",
        query_value(device),
        lang_tail(lang)
    )
}

/// The channel page of the channel `key` (at `span`, when not the page's default).
pub(crate) fn channel_href(key: &str, span: Option<&str>, lang: Lang) -> String {
    let span = span.map_or_else(String::new, |s| format!("&span={s}"));
    format!("/channel?key={}{span}{}", query_value(key), lang_tail(lang))
}

fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    let mut out = String::new();
    for (reason, n) in errors {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{reason} {n}");
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::alert::AlertState;
    use crate::model::{QuantityKind, Series};
    use crate::spool::SinkBacklog;

    /// 2026-11-30T07:00:00Z = 15:00:00 in UTC+8.
    pub(crate) const NOW: TimestampNs = 1_796_022_000 * NANOS_PER_SEC;

    pub(crate) fn channel(
        device: &str,
        point: &str,
        value: f64,
        quality: Quality,
        age_s: i64,
    ) -> ChannelView {
        ChannelView {
            series: Arc::new(Series::new(
                "xa",
                "gw-1",
                device,
                point,
                QuantityKind::Settlement,
                "mm",
                &BTreeMap::new(),
            )),
            last_ts: NOW - age_s * NANOS_PER_SEC,
            last_value: Some(value),
            last_raw: None,
            last_quality: quality,
            readings: 7,
            judged_ts: None,
        }
    }

    /// The alert tests' orange settlement alert, raised ten minutes before [`NOW`].
    pub(crate) fn alert() -> Alert {
        let at = NOW - 600 * NANOS_PER_SEC;
        Alert {
            started_at: at,
            event_at: at,
            detected_at: at,
            message: "【警戒】A栋 沉降点 lev-a1/ch3 累计沉降 32.5 mm，超过警戒值 30.0 mm".into(),
            ..crate::alert::tests::settlement_alert()
        }
    }

    fn render(lang: Lang) -> String {
        let view = SiteView::new(
            NOW,
            vec![
                channel("lev-a1", "ch3", 32.5, Quality::Good, 5),
                channel("lev-a1", "ch1", 1.25, Quality::OutOfRange, 5),
                channel("cigem-7", "gnss", -0.004, Quality::Good, 3 * 3600),
            ]
            .into_iter(),
            [alert()].iter(),
        );
        let mut spool = SpoolStats {
            available: true,
            file_bytes: 3 * 1024 * 1024,
            ..SpoolStats::default()
        };
        spool.sinks.insert(
            "central".into(),
            SinkBacklog {
                points_records: 120,
                alerts_records: 0,
            },
        );
        let counters = vec![
            CounterSample {
                counter: Counter::ModbusRequests,
                labels: vec![("device", "lev-a1".into())],
                value: 40,
            },
            CounterSample {
                counter: Counter::ModbusErrors,
                labels: vec![("device", "lev-a1".into()), ("reason", "timeout".into())],
                value: 2,
            },
        ];
        overview(
            &Overview {
                site: "xa",
                gateway: "gw-1",
                uptime: Duration::from_secs(3725),
                now_ns: NOW,
                view: &view,
                spool: &spool,
                counters: &counters,
            },
            lang,
        )
        .into_string()
    }

    fn row_with<'a>(page: &'a str, needle: &str) -> &'a str {
        page.split("<tr")
            .find(|r| r.contains(needle))
            .unwrap_or_else(|| panic!("no row with {needle}"))
    }

    #[test]
    fn the_overview_shows_devices_channels_alerts_and_the_spool() {
        let page = render(Lang::Zh);
        // Devices in key order, each followed by its channels in key order.
        let cigem = page.find(">cigem-7</a>").expect("device cigem-7");
        let lev = page.find(">lev-a1</a>").expect("device lev-a1");
        let ch1 = page.find(">ch1</a></td>").expect("ch1");
        let ch3 = page.find(">ch3</a></td>").expect("ch3");
        assert!(cigem < lev && lev < ch1 && ch1 < ch3);
        // Each device and channel links to its page.
        assert!(page.contains(r#"<a href="/device?name=lev-a1">lev-a1</a>"#));
        assert!(page.contains(r#"<a href="/channel?key=lev-a1%2Fch3">ch3</a>"#));
        assert!(page.contains(r#"<a href="/alerts">告警记录</a>"#));
        assert!(row_with(&page, ">ch3</a></td>").contains(">32.5 mm<"));
        // A flagged reading says so, with its code.
        assert!(row_with(&page, ">ch1</a></td>").contains("超出量程 (400)"));
        // Three hours without a reading: shown late.
        assert!(row_with(&page, ">gnss</a></td>").contains("class=\"channel late\""));
        assert!(row_with(&page, ">gnss</a></td>").contains(">-0.004 mm<"));
        // Times in UTC+8.
        assert!(row_with(&page, ">ch3</a></td>").contains("2026-11-30 14:59:55"));
        // The device's Modbus counts.
        assert!(page.contains("Modbus 请求 40"));
        assert!(page.contains("错误 timeout 2"));
        // The alert, with its level colour and name, value, threshold and message.
        let a = row_with(&page, "settlement-total");
        assert!(a.contains("background:#e8730c") && a.contains(">警戒<"));
        assert!(a.contains(">32.5 mm<") && a.contains(">30 mm<"));
        assert!(a.contains("2026-11-30 14:50:00") && a.contains("10m"));
        assert!(page.contains("当前告警 (1)"));
        // The spool: writable, its size and the sink's backlog.
        assert!(page.contains("可写") && page.contains("3.0 MiB"));
        assert!(row_with(&page, "<td>central</td>").contains(">120<"));
        assert!(page.contains("已运行 1h 2m 5s"));
    }

    #[test]
    fn english_on_request_and_text_is_escaped() {
        assert_eq!(Lang::from_query(Some("lang=en")), Lang::En);
        assert_eq!(Lang::from_query(Some("x=1&lang=en")), Lang::En);
        assert_eq!(Lang::from_query(Some("lang=english")), Lang::Zh);
        assert_eq!(Lang::from_query(None), Lang::Zh);
        let page = render(Lang::En);
        assert!(page.contains("Active alerts (1)") && page.contains(">warning<"));
        assert!(row_with(&page, ">ch1</a></td>").contains("out of range (400)"));
        assert!(page.contains("href=\"?\""), "a link back to Chinese");
        // A device name is data: markup in it is shown, not run.
        let view = SiteView::new(
            NOW,
            [channel("<script>x</script>", "p", 1.0, Quality::Good, 1)].into_iter(),
            std::iter::empty(),
        );
        let spool = SpoolStats::default();
        let page = overview(
            &Overview {
                site: "xa",
                gateway: "gw-1",
                uptime: Duration::ZERO,
                now_ns: NOW,
                view: &view,
                spool: &spool,
                counters: &[],
            },
            Lang::En,
        )
        .into_string();
        assert!(!page.contains("<script>x"));
        assert!(page.contains("&lt;script&gt;x"));
        assert!(page.contains("NOT writable"));
    }

    #[test]
    fn an_acknowledged_alert_says_who_and_every_alert_has_the_form() {
        let mut acked = alert();
        acked.state = AlertState::Acknowledged;
        acked.ack = Some(crate::alert::Acknowledgement {
            by: "监理 王工".into(),
            note: "现场核查".into(),
            at: NOW - 60 * NANOS_PER_SEC,
        });
        let view = SiteView::new(NOW, std::iter::empty(), [acked].iter());
        let spool = SpoolStats::default();
        let page = overview(
            &Overview {
                site: "xa",
                gateway: "gw-1",
                uptime: Duration::ZERO,
                now_ns: NOW,
                view: &view,
                spool: &spool,
                counters: &[],
            },
            Lang::Zh,
        )
        .into_string();
        let row = row_with(&page, "settlement-total");
        assert!(
            row.contains("已消警：监理 王工 · 2026-11-30 14:59:00"),
            "{row}"
        );
        assert!(row.contains("现场核查"));
        assert!(row.contains(r#"<form method="post" action="/alerts/ack">"#));
        assert!(row.contains(&format!(r#"name="id" value="{}""#, alert().id)));
        assert!(row.contains(r#"name="lang" value="zh""#));
    }

    #[test]
    fn the_answer_to_a_form_says_what_happened() {
        let refused = ack_result(&Err(Some(AckRefused::NoOne)), Lang::Zh).into_string();
        assert!(refused.contains("未能消警") && refused.contains("请填写消警人"));
        let gone = ack_result(&Err(None), Lang::En).into_string();
        assert!(gone.contains("did not answer") && gone.contains("url=/?lang=en"));
        let mut event = alert();
        event.message = "【消警】…".into();
        let held = ack_result(
            &Ok(Acked {
                event,
                stored: false,
            }),
            Lang::Zh,
        )
        .into_string();
        assert!(held.contains("已消警") && held.contains("本地缓存暂不可写"));
    }

    #[test]
    fn the_config_page_shows_the_check_text_escaped() {
        let page = config("xa", "gw-1", "device <lev-a1>: 8 channels\n", Lang::Zh).into_string();
        assert!(
            page.contains("<pre>device &lt;lev-a1&gt;: 8 channels\n</pre>"),
            "{page}"
        );
        assert!(page.contains("工地 xa · gw-1 · 配置"));
    }

    #[test]
    fn values_read_as_a_site_reads_them() {
        assert_eq!(value_text(32.5), "32.5");
        assert_eq!(value_text(30.0), "30");
        assert_eq!(value_text(-0.0004), "0");
        assert_eq!(value_text(1.23456), "1.235");
        assert_eq!(local_time(0), "1970-01-01 08:00:00");
        assert_eq!(local_time(-NANOS_PER_SEC * 9 * 3600), "");
    }
}
