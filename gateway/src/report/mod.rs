//! The daily report (监理日报, issue 9 item 5): one printable HTML page per site and day, with
//! SVG charts, made from the local history ([`crate::history`]) and kept in
//! `data_dir/reports/<YYYY-MM-DD>.html`.
//!
//! Owns what the report says and when it is made: per watch (settlement, concrete curing,
//! slope), each channel's latest value of the day, its change over the day, the rate of that
//! change, min and max, readings and bad readings, and a curve of the day; the day's alert
//! events (raised, escalated, cleared, acknowledged, notices) with counts; devices without
//! readings and for how long. Made every day at `[console.report] at` (local time, UTC+8) for
//! the day before, and on demand (`gateway report --date`, or the console's form). It reads the
//! history only, so it works with the uplink down; what the history does not hold (a day older
//! than its window) is reported as missing, never guessed.
//!
//! A report the schedule made is also summarised in one notice (`cause = report`: channels,
//! readings, the day's alert events, devices offline, where to read it), which the engine
//! delivers through every alert sink like any notice, so the WeCom or DingTalk group reads it
//! in the morning ([`Summary::notice`]; `[console.report] notify = false` turns it off).
//!
//! It does not own the history, the console's routes, or the drawing (`console::chart`).

mod config;
#[cfg(test)]
mod tests;

pub use config::{ReportConfig, ReportSettings, DEFAULT_AT};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use maud::{html, Markup, PreEscaped, DOCTYPE};
use tracing::{info, warn};

use crate::alert::AlertState;
use crate::console::pages::{local_time, value_text, Lang, DISPLAY_OFFSET_SECONDS, STYLE};
use crate::history::{Bucket, ChannelMeta, Curve, History, TIERS};
use crate::model::{QuantityKind, TimestampNs, NANOS_PER_SEC};

/// Directory of the reports inside `data_dir`.
pub const REPORTS_DIR: &str = "reports";

/// A device without any reading for longer than this within the day is listed as offline. The
/// report reads the 30 min buckets, so shorter pauses cannot be told from a slow device.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(3600);

/// Most alert events listed in a report (newest first); the counts cover them all.
pub const MAX_EVENTS: usize = 1_000;

/// Size of a channel's curve in the report (printable on A4 at two per column height).
const CHART_SIZE: (u32, u32) = (640, 170);

const SECONDS_PER_DAY: i64 = 24 * 3600;

/// One local day (UTC+8), as the report covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// 00:00 local time, in ns since 1970.
    pub start_ns: TimestampNs,
}

impl Day {
    /// The day named `YYYY-MM-DD`.
    ///
    /// # Errors
    /// Not a date in that form.
    pub fn parse(date: &str) -> Result<Self, String> {
        let bad = || format!("\"{date}\" is not a date; write it as YYYY-MM-DD, e.g. 2026-11-28");
        if date.len() != 10 {
            return Err(bad());
        }
        let midnight_utc =
            humantime::parse_rfc3339(&format!("{date}T00:00:00Z")).map_err(|_| bad())?;
        let secs = midnight_utc
            .duration_since(UNIX_EPOCH)
            .map_err(|_| bad())?
            .as_secs();
        let secs = i64::try_from(secs).map_err(|_| bad())? - DISPLAY_OFFSET_SECONDS;
        Ok(Self {
            date: date.to_owned(),
            start_ns: secs * NANOS_PER_SEC,
        })
    }

    /// The local day holding `ns`.
    #[must_use]
    pub fn of(ns: TimestampNs) -> Self {
        let local = ns.div_euclid(NANOS_PER_SEC) + DISPLAY_OFFSET_SECONDS;
        let day_start_local = local - local.rem_euclid(SECONDS_PER_DAY);
        let start_ns = (day_start_local - DISPLAY_OFFSET_SECONDS) * NANOS_PER_SEC;
        Self {
            date: local_time(start_ns)
                .get(..10)
                .unwrap_or_default()
                .to_owned(),
            start_ns,
        }
    }

    /// The day before.
    #[must_use]
    pub fn previous(&self) -> Self {
        Self::of(self.start_ns - NANOS_PER_SEC)
    }

    /// 24:00 local time (the next day's start).
    #[must_use]
    pub const fn end_ns(&self) -> TimestampNs {
        self.start_ns + SECONDS_PER_DAY * NANOS_PER_SEC
    }
}

/// The watches of a site, as the report groups channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Watch {
    /// 沉降观测: settlement and levelling.
    Settlement,
    /// 混凝土养护: temperatures, humidity, maturity, strength.
    Curing,
    /// 边坡监测: displacement, cracks, tilt, rain, pore pressure, and the slope analytics.
    Slope,
}

impl Watch {
    /// The watch a quantity belongs to; `None` for the technician's quantities (voltage,
    /// signal, status ...), which the report leaves out.
    #[must_use]
    pub const fn of(kind: QuantityKind) -> Option<Self> {
        use QuantityKind as Q;
        match kind {
            Q::Settlement | Q::Level => Some(Self::Settlement),
            Q::Temperature | Q::Humidity | Q::Maturity | Q::Age | Q::Strength => Some(Self::Curing),
            Q::Displacement
            | Q::Crack
            | Q::Tilt
            | Q::Azimuth
            | Q::Rainfall
            | Q::PorePressure
            | Q::InverseVelocity
            | Q::FailureForecast
            | Q::TimeToFailure
            | Q::TangentAngle => Some(Self::Slope),
            _ => None,
        }
    }

    const fn title(self) -> &'static str {
        match self {
            Self::Settlement => "沉降观测 (settlement)",
            Self::Curing => "混凝土养护 (concrete curing)",
            Self::Slope => "边坡监测 (slope)",
        }
    }
}

/// One channel's day.
#[derive(Debug, Clone)]
struct ChannelDay {
    meta: ChannelMeta,
    curve: Curve,
}

impl ChannelDay {
    fn with_readings(&self) -> Vec<&Bucket> {
        self.curve.buckets.iter().filter(|b| b.count > 0).collect()
    }
}

/// The day's summary of a channel: `(latest, change, rate per day, min, max, readings, bad)`;
/// `None` without a good reading.
type ChannelSummary = (f64, f64, Option<f64>, f64, f64, u64, u64);

fn summarise(c: &ChannelDay) -> Option<ChannelSummary> {
    let good = c.with_readings();
    let (first, last) = (good.first()?, good.last()?);
    let change = last.mean - first.mean;
    #[allow(clippy::cast_precision_loss)]
    let hours = (last.start_ns - first.start_ns) as f64 / (3600.0 * 1e9);
    // A rate needs two buckets at least an hour apart; closer, it says nothing about a day.
    let rate = (hours >= 1.0).then(|| change / hours * 24.0);
    let min = good.iter().map(|b| b.min).fold(f64::INFINITY, f64::min);
    let max = good.iter().map(|b| b.max).fold(f64::NEG_INFINITY, f64::max);
    let readings = good.iter().map(|b| u64::from(b.count)).sum();
    let bad = c.curve.buckets.iter().map(|b| u64::from(b.bad)).sum();
    Some((last.mean, change, rate, min, max, readings, bad))
}

/// The parts of `from..to` that no interval of `covered` covers and that are longer than
/// [`OFFLINE_AFTER`], in time order.
fn uncovered(
    mut covered: Vec<(TimestampNs, TimestampNs)>,
    from: TimestampNs,
    to: TimestampNs,
) -> Vec<(TimestampNs, TimestampNs)> {
    let limit = i64::try_from(OFFLINE_AFTER.as_nanos()).unwrap_or(i64::MAX);
    covered.sort_unstable();
    let mut out = Vec::new();
    let mut covered_to = from;
    for (start, end) in covered {
        if start - covered_to > limit {
            out.push((covered_to, start.min(to)));
        }
        covered_to = covered_to.max(end);
    }
    if to - covered_to > limit {
        out.push((covered_to, to));
    }
    out
}

/// What a day's report found, in numbers: the notice that announces it says this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The day.
    pub date: String,
    /// Channels with readings that day or the day before.
    pub channels: usize,
    /// Good and bad readings.
    pub readings: u64,
    /// See [`Summary::readings`].
    pub bad: u64,
    /// Alert events of the day by state: raised, escalated, cleared, acknowledged.
    pub raised: usize,
    /// See [`Summary::raised`].
    pub escalated: usize,
    /// See [`Summary::raised`].
    pub cleared: usize,
    /// See [`Summary::raised`].
    pub acknowledged: usize,
    /// Devices without readings for longer than [`OFFLINE_AFTER`] that day.
    pub offline: Vec<String>,
}

/// Most offline devices a summary names (the count covers them all).
pub const SUMMARY_DEVICES: usize = 5;

impl Summary {
    /// The notice announcing the report of `self.date` for `site`/`gateway`, worded in
    /// `language` (the rules' language), made at `now`. Its id is the day's, so a report made
    /// again the same day is the same notice (a receiver de-duplicates on `(id, seq)`).
    #[must_use]
    pub fn notice(
        &self,
        site: &str,
        gateway: &str,
        language: crate::alert::Language,
        now: TimestampNs,
    ) -> crate::alert::Alert {
        use crate::alert::Language;
        let named: Vec<&str> = self
            .offline
            .iter()
            .take(SUMMARY_DEVICES)
            .map(String::as_str)
            .collect();
        let more = self.offline.len().saturating_sub(named.len());
        let link = format!("/report?date={}", self.date);
        let label = match language {
            Language::Zh => {
                let devices = if self.offline.is_empty() {
                    "无离线设备".to_owned()
                } else {
                    format!(
                        "离线设备 {} 台（{}{}）",
                        self.offline.len(),
                        named.join("、"),
                        if more > 0 { " 等" } else { "" }
                    )
                };
                format!(
                    "{} 工地 {site}：{} 个测点，有效读数 {}，异常读数 {}；告警 {} 起，升级 {}，解除 {}，消警 {}；{devices}。详见网关 {gateway} 控制台 {link}",
                    self.date, self.channels, self.readings, self.bad, self.raised, self.escalated, self.cleared, self.acknowledged
                )
            }
            Language::En => {
                let devices = if self.offline.is_empty() {
                    "no device offline".to_owned()
                } else {
                    format!(
                        "{} device(s) offline ({}{})",
                        self.offline.len(),
                        named.join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    )
                };
                format!(
                    "{} site {site}: {} channels, {} good readings, {} bad; {} alerts raised, {} escalated, {} cleared, {} acknowledged; {devices}. On gateway {gateway}'s console: {link}",
                    self.date, self.channels, self.readings, self.bad, self.raised, self.escalated, self.cleared, self.acknowledged
                )
            }
        };
        let id_day = Day::parse(&self.date).map_or(now, |d| d.start_ns);
        let mut a = crate::alert::Alert {
            id: crate::alert::stable_id(site, REPORT_RULE, None, &[&self.date], id_day),
            seq: 0,
            kind: crate::alert::AlertKind::Notice,
            cause: crate::alert::Cause::Report,
            site: site.to_owned(),
            structure: None,
            device: gateway.to_owned(),
            point: String::new(),
            channel: gateway.to_owned(),
            channels: Vec::new(),
            quantity: None,
            rule: REPORT_RULE.to_owned(),
            label: Some(label),
            side: None,
            level: crate::alert::Level::Blue,
            previous_level: None,
            state: AlertState::Notice,
            value: None,
            threshold: None,
            unit: String::new(),
            quality: None,
            started_at: now,
            event_at: now,
            detected_at: now,
            message: String::new(),
            ack: None,
        };
        a.message = crate::alert::render_message(&a, language);
        a
    }
}

/// The `rule` of the report's notice.
pub const REPORT_RULE: &str = "daily-report";

/// The report of `day` for `site`/`gateway` from `history`, made at `now`.
#[must_use]
pub fn render(history: &History, day: &Day, site: &str, gateway: &str, now: TimestampNs) -> Markup {
    compose(history, day, site, gateway, now).0
}

/// The report of `day` and what it found.
fn compose(
    history: &History,
    day: &Day,
    site: &str,
    gateway: &str,
    now: TimestampNs,
) -> (Markup, Summary) {
    let tier = TIERS[2];
    let to = day.end_ns().min(now);
    // The channels with readings this day or the day before: one that fell silent yesterday
    // is listed (offline), one removed from the site long ago is not.
    let look_back = day.start_ns - SECONDS_PER_DAY * NANOS_PER_SEC;
    let mut channels: Vec<ChannelDay> = history
        .channels()
        .into_iter()
        .filter_map(|meta| {
            let mut curve = history.curve(&meta.key, look_back, day.end_ns() - 1, tier);
            if curve.buckets.is_empty() {
                return None;
            }
            curve.buckets.retain(|b| b.start_ns >= day.start_ns);
            Some(ChannelDay { meta, curve })
        })
        .collect();
    channels.sort_by(|a, b| a.meta.key.cmp(&b.meta.key));
    let mut watches: BTreeMap<Watch, Vec<&ChannelDay>> = BTreeMap::new();
    for c in &channels {
        if let Some(w) = Watch::of(c.meta.kind) {
            watches.entry(w).or_default().push(c);
        }
    }
    // Devices: the buckets with readings of any of their channels. Where no device of the
    // site has any (the gateway stopped, or not yet installed), no device is called offline:
    // those times are listed once for the site.
    let width_ns = i64::from(tier.width_secs) * NANOS_PER_SEC;
    let mut devices: BTreeMap<&str, Vec<(TimestampNs, TimestampNs)>> = BTreeMap::new();
    for c in &channels {
        let covered = devices.entry(c.meta.device.as_str()).or_default();
        covered.extend(
            c.with_readings()
                .iter()
                .map(|b| (b.start_ns, b.start_ns + width_ns)),
        );
    }
    let site_gaps = uncovered(
        devices.values().flatten().copied().collect(),
        day.start_ns,
        to,
    );
    let offline: Vec<(&str, Vec<(TimestampNs, TimestampNs)>)> = devices
        .into_iter()
        .map(|(d, mut covered)| {
            covered.extend(site_gaps.iter().copied());
            (d, uncovered(covered, day.start_ns, to))
        })
        .filter(|(_, g)| !g.is_empty())
        .collect();
    let mut events = history.alerts_between(day.start_ns, day.end_ns(), MAX_EVENTS);
    events.sort_by_key(|a| a.event_at);
    let count = |state: AlertState| events.iter().filter(|a| a.state == state).count();
    let readings: u64 = channels
        .iter()
        .flat_map(|c| &c.curve.buckets)
        .map(|b| u64::from(b.count))
        .sum();
    let bad: u64 = channels
        .iter()
        .flat_map(|c| &c.curve.buckets)
        .map(|b| u64::from(b.bad))
        .sum();
    let title = format!("监理日报 {} · {site}", day.date);
    let summary = Summary {
        date: day.date.clone(),
        channels: channels.len(),
        readings,
        bad,
        raised: count(AlertState::Raised),
        escalated: count(AlertState::Escalated),
        cleared: count(AlertState::Cleared),
        acknowledged: count(AlertState::Acknowledged),
        offline: offline.iter().map(|(d, _)| (*d).to_owned()).collect(),
    };
    let page = html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                title { (title) }
                style {
                    (PreEscaped(STYLE))
                    "svg{max-width:100%;height:auto}figure{margin:.3em 0 1em;break-inside:avoid}"
                    "@media print{a{color:inherit;text-decoration:none}body{margin:0}}"
                }
            }
            body {
                h1 { (title) }
                p.meta {
                    "工地 site " (site) " · 网关 gateway " (gateway)
                    " · 日期 " (day.date) " 00:00–24:00 (UTC+8)"
                    " · 生成于 made " (local_time(now))
                    @if now < day.end_ns() { " · " span.bad { "当日未结束 (the day is not over)" } }
                }
                h2 { "概况 Summary" }
                table.summary {
                    tr { th { "测点 channels" } th { "有效读数 good readings" } th { "异常读数 bad readings" } th { "告警 raised" } th { "升级 escalated" } th { "解除 cleared" } th { "消警 acknowledged" } th { "离线设备 devices offline" } }
                    tr {
                        td.num { (channels.len()) } td.num.readings { (readings) } td.num { (bad) }
                        td.num.raised { (count(AlertState::Raised)) } td.num { (count(AlertState::Escalated)) }
                        td.num.cleared { (count(AlertState::Cleared)) } td.num.acked { (count(AlertState::Acknowledged)) }
                        td.num { (offline.len()) }
                    }
                }
                @if channels.is_empty() {
                    p.bad { "本地历史中没有该日的数据（超出保存期，或网关当日未运行）。 The local history holds nothing of this day (older than its window, or the gateway did not run)." }
                }
                @for (watch, list) in &watches {
                    h2 { (watch.title()) }
                    (watch_table(list))
                    @for c in list {
                        @if !c.with_readings().is_empty() {
                            figure {
                                figcaption { b { (c.meta.key) } " · " (c.meta.kind) }
                                @match crate::console::chart::draw(&c.curve, day.start_ns / NANOS_PER_SEC..day.end_ns() / NANOS_PER_SEC, &c.meta.unit, false, CHART_SIZE) {
                                    Ok(svg) => (PreEscaped(svg)),
                                    Err(e) => p.bad { "无法绘制 cannot draw: " (e) },
                                }
                            }
                        }
                    }
                }
                h2 { "告警事件 Alert events (" (events.len()) ")" }
                @if events.is_empty() { p.ok { "无 none" } } @else {
                    (crate::console::detail::events_table(&events, Lang::Zh))
                }
                @if !channels.is_empty() && !site_gaps.is_empty() {
                    h2 { "网关无读数 No readings at all (gateway stopped or not yet installed)" }
                    table.site-gaps {
                        tr { th { "自 from" } th { "至 to" } th { "时长 for" } }
                        @for (from, until) in &site_gaps {
                            tr { td { (local_time(*from)) } td { (local_time(*until)) } td { (span_text(*from, *until)) } }
                        }
                    }
                }
                h2 { "设备离线 Devices without readings (> " (humantime::format_duration(OFFLINE_AFTER)) ")" }
                @if offline.is_empty() { p.ok { "无 none" } } @else {
                    table.offline {
                        tr { th { "设备 device" } th { "自 from" } th { "至 to" } th { "时长 for" } }
                        @for (device, gaps) in &offline {
                            @for (from, until) in gaps {
                                tr.offline data-device=(device) {
                                    td { (device) } td { (local_time(*from)) } td { (local_time(*until)) }
                                    td { (span_text(*from, *until)) }
                                }
                            }
                        }
                    }
                }
                p.meta {
                    "数据来自网关本地历史（30 分钟分段：均值、最小、最大）；变化 = 当日最后一段均值 − 第一段均值；速率按当日首末段折算为每天。"
                    " From the gateway's local history (30 min buckets: mean, min, max); change = last bucket's mean − first bucket's mean of the day; rate = that change per day."
                }
            }
        }
    };
    (page, summary)
}

fn watch_table(list: &[&ChannelDay]) -> Markup {
    html! {
        table.watch {
            tr {
                th { "测点 channel" } th { "最新 latest" } th { "当日变化 change" } th { "速率 rate /d" }
                th { "最小 min" } th { "最大 max" } th { "读数 readings" } th { "异常 bad" }
            }
            @for c in list {
                tr.channel data-key=(c.meta.key) {
                    td { (c.meta.key) }
                    @if let Some((latest, change, rate, min, max, n, bad)) = summarise(c) {
                        td.num.latest { (value_text(latest)) " " (c.meta.unit) }
                        td.num.change data-v=(change) { (signed(change)) " " (c.meta.unit) }
                        td.num { @if let Some(r) = rate { (signed(r)) " " (c.meta.unit) "/d" } @else { "—" } }
                        td.num { (value_text(min)) } td.num { (value_text(max)) }
                        td.num { (n) } td.num { (bad) }
                    } @else {
                        td colspan="7" { "当日无有效读数 no good reading this day" }
                    }
                }
            }
        }
    }
}

/// How long from `from` to `until`, e.g. `22h 30m`.
fn span_text(from: TimestampNs, until: TimestampNs) -> String {
    let secs = u64::try_from((until - from) / NANOS_PER_SEC).unwrap_or(0);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// A change with its sign.
fn signed(v: f64) -> String {
    let text = value_text(v);
    if v > 0.0 && text != "0" {
        format!("+{text}")
    } else {
        text
    }
}

/// The file of `day`'s report in `data_dir`.
#[must_use]
pub fn path_of(data_dir: &Path, day: &Day) -> PathBuf {
    data_dir
        .join(REPORTS_DIR)
        .join(format!("{}.html", day.date))
}

/// Make `day`'s report and keep it in `data_dir` (written to a temporary file, then renamed:
/// a reader never sees half a report).
///
/// # Errors
/// The directory or the file cannot be written (the message names it).
pub fn make(
    history: &History,
    data_dir: &Path,
    day: &Day,
    site: &str,
    gateway: &str,
    now: TimestampNs,
) -> Result<(PathBuf, Summary), String> {
    let (page, summary) = compose(history, day, site, gateway, now);
    let page = page.into_string();
    let path = path_of(data_dir, day);
    let dir = data_dir.join(REPORTS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{}.html.tmp", day.date));
    std::fs::write(&tmp, page).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((path, summary))
}

/// The days with a report in `data_dir`, newest first.
#[must_use]
pub fn list(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(REPORTS_DIR)) else {
        return Vec::new();
    };
    let mut days: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let date = name.strip_suffix(".html")?;
            Day::parse(date).ok().map(|d| d.date)
        })
        .collect();
    days.sort_unstable_by(|a, b| b.cmp(a));
    days
}

/// When the next report is due after `now`: the next `at` (seconds after local midnight).
fn next_due(now: TimestampNs, at_secs: u32) -> TimestampNs {
    let today = Day::of(now);
    let due = today.start_ns + i64::from(at_secs) * NANOS_PER_SEC;
    if due > now {
        due
    } else {
        due + SECONDS_PER_DAY * NANOS_PER_SEC
    }
}

/// Where the schedule's reports are announced: the engine's notice channel and the wording.
#[derive(Debug, Clone)]
pub struct Announce {
    /// The engine's end takes the notice into the alerts stream.
    pub notices: crate::engine::command::NoticeTx,
    /// The rules' language.
    pub language: crate::alert::Language,
}

/// The daily task: at `settings.at` every day, the report of the day before; at start, the
/// report of the day before when it is past `at` and the report is missing (the gateway was
/// down at that time). Each report made is announced through `announce` when given.
pub async fn keep_making(
    history: Arc<History>,
    settings: ReportSettings,
    data_dir: PathBuf,
    (site, gateway): (String, String),
    announce: Option<Announce>,
    stop: tokio_util::sync::CancellationToken,
) {
    let made = |day: Day| {
        let (h, dir, site, gw) = (
            Arc::clone(&history),
            data_dir.clone(),
            site.clone(),
            gateway.clone(),
        );
        let announce = announce.clone();
        async move {
            let now = crate::model::now_ns();
            let date = day.date.clone();
            let (site2, gw2) = (site.clone(), gw.clone());
            match crate::supervise::spawn_blocking(move || make(&h, &dir, &day, &site, &gw, now))
                .await
            {
                Ok(Ok((path, summary))) => {
                    info!(date = %date, path = %path.display(), "Daily report made.");
                    if let Some(a) = announce {
                        let notice = summary.notice(&site2, &gw2, a.language, now);
                        if a.notices.send(notice).await.is_err() {
                            warn!(date = %date, "The daily report's notice was not sent: the engine has stopped.");
                        }
                    }
                }
                Ok(Err(e)) => warn!(date = %date, error = %e, "Cannot make the daily report."),
                Err(e) => warn!(date = %date, error = %e, "The daily report task failed."),
            }
        }
    };
    let now = crate::model::now_ns();
    let yesterday = Day::of(now).previous();
    let due_today = Day::of(now).start_ns + i64::from(settings.at_secs) * NANOS_PER_SEC;
    if now >= due_today && !path_of(&data_dir, &yesterday).exists() {
        made(yesterday).await;
    }
    loop {
        let now = crate::model::now_ns();
        let due = next_due(now, settings.at_secs);
        let wait = Duration::from_nanos(u64::try_from(due - now).unwrap_or(0));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        made(Day::of(due).previous()).await;
    }
}

/// Why `gateway report` made no report.
#[derive(Debug, thiserror::Error)]
pub enum OnDemandError {
    /// The date is not one (exit 2).
    #[error("{0}")]
    Date(String),
    /// Neither the history file nor the running gateway's console could make it (exit 1).
    #[error("{0}")]
    Unavailable(String),
}

/// `gateway report --date`: make `date`'s report from the history file when the service is
/// stopped, or ask the running gateway's console to make it (the file is the running
/// gateway's: redb lets one process open it). Returns the report's path.
///
/// # Errors
/// A bad date, or no way to the history (the message says why and what to do).
pub async fn on_demand(cfg: &crate::config::Config, date: &str) -> Result<PathBuf, OnDemandError> {
    let day = Day::parse(date).map_err(OnDemandError::Date)?;
    let history_path = cfg.data_dir.join(crate::history::HISTORY_FILE);
    let (dir, site, gateway) = (
        cfg.data_dir.clone(),
        cfg.site.clone(),
        cfg.gateway_id.clone(),
    );
    let local_day = day.clone();
    let offline = crate::supervise::spawn_blocking(move || {
        let history = History::open_existing(&history_path)?;
        make(
            &history,
            &dir,
            &local_day,
            &site,
            &gateway,
            crate::model::now_ns(),
        )
    })
    .await
    .map_err(|e| OnDemandError::Unavailable(e.to_string()))?;
    let held = match offline {
        Ok((path, _)) => return Ok(path),
        Err(e) if e.contains("open in another process") => e,
        Err(e) => return Err(OnDemandError::Unavailable(e)),
    };
    let Some(console) = &cfg.console else {
        return Err(OnDemandError::Unavailable(format!(
            "{held}, and its console is off: stop the service, or turn [console] on"
        )));
    };
    // The console listens on this machine; a wildcard address is reached through loopback.
    let mut addr = console.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/reports"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("date={}", day.date))
        .timeout(Duration::from_secs(60));
    if let Some(token) = &console.token {
        request = request.bearer_auth(token.expose());
    }
    let unavailable = |why: String| {
        OnDemandError::Unavailable(format!(
            "{held}; asking its console at http://{addr}/reports: {why}"
        ))
    };
    let response = request
        .send()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(unavailable(format!("{status}: {}", text.trim())));
    }
    Ok(path_of(&cfg.data_dir, &day))
}
