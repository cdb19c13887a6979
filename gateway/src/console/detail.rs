//! The console's device, channel and alert-history pages (issue 9 item 2), rendered with maud
//! like the overview, with curves from the local history ([`super::chart`]).
//!
//! Owns what these pages show: a device's channels (latest engineering value, the device's raw
//! number behind it, quality, time) with a curve each; one channel's curve with the table of its
//! buckets (time, readings, bad, min, mean, max); and the alert events of the history window
//! (raised, escalated, de-escalated, cleared, acknowledged, notices) under the active alerts
//! with their acknowledgement form. It reads only what it is given; the routes read the engine's
//! snapshot and the history ([`super::router`]).

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::alert::{Alert, AlertState};
use crate::engine::view::{ChannelView, SiteView};
use crate::history::{Curve, HistoryStats};
use crate::metrics::CounterSample;
use crate::model::TimestampNs;

use super::chart::{self, Span};
use super::pages::{
    alerts_section, channel_head, channel_href, channel_row, device_counts, device_counts_line,
    device_href, level_colour, level_name, local_time, quality_words, value_text, Lang, STYLE,
};

/// The device and channel pages reload this often (seconds): they draw curves, which change at
/// the history's 10 s resolution at most.
pub const CURVE_REFRESH_SECONDS: u32 = 30;

/// Most buckets listed under a channel's curve (newest first): an hour of 10 s buckets is 360,
/// more than a page needs to read; the curve shows them all.
pub const TABLE_ROWS: usize = 60;

/// Most alert events the alert history page lists (newest first).
pub const ALERT_ROWS: usize = 500;

/// What every one of these pages is about.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The site.
    pub site: &'a str,
    /// This gateway.
    pub gateway: &'a str,
    /// Gateway time now.
    pub now_ns: TimestampNs,
    /// The engine's latest snapshot.
    pub view: &'a SiteView,
    /// The history's state; `None`: no history is kept.
    pub history: Option<&'a HistoryStats>,
}

/// A page: head, title, the way back, the language switch, then `body`.
fn frame(title: &str, lang: Lang, other_lang: &str, refresh: Option<u32>, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.pick("zh-CN", "en")) {
            head {
                meta charset="utf-8";
                @if let Some(r) = refresh { meta http-equiv="refresh" content=(r); }
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) "svg{max-width:100%;height:auto}" }
            }
            body {
                h1 { (title) }
                p.meta {
                    a href=(lang.pick("/", "/?lang=en")) { (lang.pick("总览", "Overview")) }
                    " · " a href=(lang.pick("/alerts", "/alerts?lang=en")) { (lang.pick("告警记录", "Alert history")) }
                    " · " a href=(lang.pick("/reports", "/reports?lang=en")) { (lang.pick("监理日报", "Daily reports")) }
                    " · " a href=(other_lang) { (lang.pick("English", "中文")) }
                }
                (body)
            }
        }
    }
}

/// Why there is no curve, when there is none.
fn history_note(history: Option<&HistoryStats>, lang: Lang) -> Option<Markup> {
    match history {
        None => Some(
            html! { p.meta { (lang.pick("未启用本地历史（[console.history] enabled = false）", "no local history is kept ([console.history] enabled = false)")) } },
        ),
        Some(h) if !h.available => Some(html! {
            p.bad { (lang.pick("本地历史暂不可用：", "local history unavailable: ")) (h.reason.as_deref().unwrap_or("")) }
        }),
        Some(h) if h.kept < h.window => Some(html! {
            p.bad {
                (lang.pick("本地历史已达容量上限，现仅保留 ", "the local history reached its max_bytes and keeps only "))
                (humantime::format_duration(h.kept))
            }
        }),
        Some(_) => None,
    }
}

/// The span links of a page: the current one in bold.
fn span_links(current: Span, href: impl Fn(Span) -> String, lang: Lang) -> Markup {
    html! {
        p {
            (lang.pick("曲线时段：", "Span: "))
            @for s in Span::ALL {
                @if s == current { b { (s.label(lang)) } } @else { a href=(href(s)) { (s.label(lang)) } }
                " "
            }
        }
    }
}

/// One curve, or what kept it from being drawn.
fn curve_figure(curve: &Curve, span: Span, now: TimestampNs, unit: &str, lang: Lang) -> Markup {
    let readings: u64 = curve.buckets.iter().map(|b| u64::from(b.count)).sum();
    let drawn = curve.buckets.iter().filter(|b| b.count > 0).count();
    html! {
        figure {
            @match chart::svg(curve, span, now, unit) {
                Ok(svg) => (PreEscaped(svg)),
                Err(e) => p.bad { (lang.pick("无法绘制曲线：", "cannot draw the curve: ")) (e) },
            }
            figcaption.meta {
                span.buckets { (drawn) } (lang.pick(" 个时段，", " buckets of "))
                (curve.width_secs) (lang.pick(" 秒一段，共 ", " s, "))
                span.readings { (readings) } (lang.pick(" 个有效读数（蓝线：均值；浅色：最小–最大）", " good readings (line: mean; band: min to max)"))
            }
        }
    }
}

fn value_cell(v: Option<f64>, unit: &str) -> Markup {
    html! { @if let Some(v) = v { (value_text(v)) " " (unit) } @else { "—" } }
}

/// The device page: its channels and a curve of each over `span`.
#[must_use]
pub fn device(
    c: &Context<'_>,
    device: &str,
    counters: &[CounterSample],
    curves: &[(&ChannelView, Curve)],
    span: Span,
    lang: Lang,
) -> Markup {
    let title = format!("{} {} · {}", lang.pick("设备", "Device"), device, c.site);
    let counts = device_counts(counters);
    let other = device_href(device, Some(span.param()), other(lang));
    let body = html! {
        p.meta { (device) (device_counts_line(counts.get(device), lang)) }
        @if curves.is_empty() {
            p.bad { (lang.pick("当前没有该设备的测点读数", "no channel of this device has readings now")) }
        } @else {
            table {
                (channel_head(lang, true))
                @for (ch, _) in curves {
                    (channel_row(ch, c.now_ns, lang, true))
                }
            }
            (span_links(span, |s| device_href(device, Some(s.param()), lang), lang))
            @if let Some(note) = history_note(c.history, lang) { (note) }
            @for (ch, curve) in curves {
                h2 { a href=(channel_href(&ch.series.key, Some(span.param()), lang)) { (ch.series.point) } " · " (ch.series.kind) }
                (curve_figure(curve, span, c.now_ns, &ch.series.unit, lang))
            }
        }
    };
    frame(&title, lang, &other, Some(CURVE_REFRESH_SECONDS), &body)
}

/// The channel page: latest reading, the curve over `span` and its buckets, newest first.
/// `channel` is `None` for a channel the engine holds no more (evicted after a long silence, or
/// before its first reading since a restart): the history still draws it.
#[must_use]
pub fn channel(
    c: &Context<'_>,
    key: &str,
    channel: Option<&ChannelView>,
    curve: &Curve,
    span: Span,
    lang: Lang,
) -> Markup {
    let title = format!("{} {} · {}", lang.pick("测点", "Channel"), key, c.site);
    let other = channel_href(key, Some(span.param()), other(lang));
    let unit = channel.map_or("", |ch| ch.series.unit.as_str());
    let body = html! {
        @if let Some(ch) = channel {
            p {
                (lang.pick("设备 ", "Device ")) a href=(device_href(&ch.series.device, None, lang)) { (ch.series.device) }
                " · " (ch.series.kind)
                " · " (lang.pick("最新值 ", "latest ")) b.latest { (value_cell(ch.last_value, unit)) }
                @if let Some(raw) = ch.last_raw { " · " (lang.pick("原始值 ", "raw ")) span.raw { (value_text(raw)) } }
                " · " span class=[(!ch.last_quality.is_good()).then_some("bad")] { (quality_words(ch.last_quality, lang)) }
                " · " (local_time(ch.last_ts))
            }
        } @else {
            p.meta { (lang.pick("网关当前未持有该测点（长时间无读数或刚重启）；下列为本地历史", "the engine holds no reading of this channel now (silent for long, or just restarted); below is the local history")) }
        }
        (span_links(span, |s| channel_href(key, Some(s.param()), lang), lang))
        @if let Some(note) = history_note(c.history, lang) { (note) }
        (curve_figure(curve, span, c.now_ns, unit, lang))
        h2 { (lang.pick("分段数据（最新在前）", "Buckets (newest first)")) }
        table.buckets {
            tr {
                th { (lang.pick("时段开始", "Bucket start")) }
                th { (lang.pick("有效读数", "Good readings")) }
                th { (lang.pick("异常读数", "Bad readings")) }
                th { (lang.pick("最小", "Min")) }
                th { (lang.pick("均值", "Mean")) }
                th { (lang.pick("最大", "Max")) }
            }
            @for b in curve.buckets.iter().rev().take(TABLE_ROWS) {
                tr.bucket data-start=(b.start_ns) {
                    td { (local_time(b.start_ns)) }
                    td.num { (b.count) }
                    td.num { (b.bad) }
                    @if b.count > 0 {
                        // The stored numbers in full in `data-v`, for whoever checks them.
                        td.num.min data-v=(b.min) { (value_text(b.min)) }
                        td.num.mean data-v=(b.mean) { (value_text(b.mean)) }
                        td.num.max data-v=(b.max) { (value_text(b.max)) }
                    } @else {
                        td { "—" } td { "—" } td { "—" }
                    }
                }
            }
        }
    };
    frame(&title, lang, &other, Some(CURVE_REFRESH_SECONDS), &body)
}

/// An event's state in words.
fn state_words(state: AlertState, lang: Lang) -> &'static str {
    match state {
        AlertState::Raised => lang.pick("告警", "raised"),
        AlertState::Escalated => lang.pick("升级", "escalated"),
        AlertState::DeEscalated => lang.pick("降级", "de-escalated"),
        AlertState::Cleared => lang.pick("解除", "cleared"),
        AlertState::Acknowledged => lang.pick("消警", "acknowledged"),
        AlertState::Notice => lang.pick("通知", "notice"),
    }
}

/// A table of alert events, in the order given: time, event, level, rule, channel, value,
/// message (and who acknowledged, with the note).
pub(crate) fn events_table(events: &[Alert], lang: Lang) -> Markup {
    html! {
        table.events {
            tr {
                th { (lang.pick("时间", "Time")) }
                th { (lang.pick("事件", "Event")) }
                th { (lang.pick("级别", "Level")) }
                th { (lang.pick("规则", "Rule")) }
                th { (lang.pick("测点", "Channel")) }
                th { (lang.pick("数值", "Value")) }
                th { (lang.pick("说明", "Message")) }
            }
            @for a in events {
                tr.event data-id=(a.id) data-state=(state_words(a.state, Lang::En)) {
                    td { (local_time(a.event_at)) }
                    td { (state_words(a.state, lang)) }
                    td { span.badge style={"background:" (level_colour(a.level))} { (level_name(a.level, lang)) } }
                    td { (a.rule) }
                    td { (a.channel) }
                    td.num { @if let Some(v) = a.value { (value_text(v)) " " (a.unit) } }
                    td {
                        (a.message)
                        @if let Some(ack) = &a.ack {
                            br; span.meta { (ack.by) @if !ack.note.is_empty() { " · " (ack.note) } }
                        }
                    }
                }
            }
        }
    }
}

/// The alert history page: the active alerts with their acknowledgement form, then every event
/// of the history window, newest first.
#[must_use]
pub fn alert_log(c: &Context<'_>, events: &[Alert], lang: Lang) -> Markup {
    let title = format!("{} · {}", lang.pick("告警记录", "Alert history"), c.site);
    let body = html! {
        (alerts_section(&c.view.alerts, c.now_ns, lang))
        h2 { (lang.pick("告警事件", "Alert events")) " (" (events.len()) ")" }
        @if let Some(note) = history_note(c.history, lang) { (note) }
        @if let Some(h) = c.history {
            p.meta { (lang.pick("保存最近 ", "kept for ")) (humantime::format_duration(h.kept)) }
        }
        @if events.is_empty() {
            p.ok { (lang.pick("无", "none")) }
        } @else {
            (events_table(events, lang))
        }
    };
    frame(
        &title,
        lang,
        lang.pick("/alerts?lang=en", "/alerts"),
        Some(super::pages::REFRESH_SECONDS),
        &body,
    )
}

/// The daily reports page: the days with a report (newest first) and the form to make one.
#[must_use]
pub fn report_list(site: &str, days: &[String], today: &str, history: bool, lang: Lang) -> Markup {
    let title = format!("{} · {}", lang.pick("监理日报", "Daily reports"), site);
    let body = html! {
        @if history {
            form method="post" action="/reports" {
                (lang.pick("生成日报：", "Make the report of "))
                input type="date" name="date" value=(today) required;
                " "
                button type="submit" { (lang.pick("生成", "Make")) }
                span.meta { (lang.pick("（每天按 [console.report] at 自动生成前一日日报）", " (made every day at [console.report] at for the day before)")) }
            }
        } @else {
            (history_note(None, lang).unwrap_or_default())
        }
        @if days.is_empty() {
            p.meta { (lang.pick("尚无日报", "no report yet")) }
        } @else {
            ul.reports {
                @for d in days {
                    li { a href={"/report?date=" (d)} { (d) } }
                }
            }
        }
    };
    frame(
        &title,
        lang,
        lang.pick("/reports?lang=en", "/reports"),
        None,
        &body,
    )
}

const fn other(lang: Lang) -> Lang {
    match lang {
        Lang::Zh => Lang::En,
        Lang::En => Lang::Zh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::pages::tests::{alert, channel, NOW};
    use crate::history::Bucket;
    use crate::model::{Quality, NANOS_PER_SEC};

    fn context<'a>(view: &'a SiteView, history: Option<&'a HistoryStats>) -> Context<'a> {
        Context {
            site: "xa",
            gateway: "gw-1",
            now_ns: NOW,
            view,
            history,
        }
    }

    /// Buckets of 10 s: at -60 s (1, 2, 3), at -50 s (4), nothing for 2 min, at -300 s (bad
    /// only).
    fn curve() -> Curve {
        let b = |ago: i64, min: f64, max: f64, mean: f64, count: u32, bad: u32| Bucket {
            start_ns: NOW - ago * NANOS_PER_SEC,
            min,
            max,
            mean,
            count,
            bad,
        };
        Curve {
            width_secs: 10,
            buckets: vec![
                b(300, 0.0, 0.0, 0.0, 0, 2),
                b(60, 1.0, 3.0, 2.0, 3, 0),
                b(50, 4.0, 4.0, 4.0, 1, 0),
            ],
        }
    }

    #[test]
    fn the_channel_page_draws_the_curve_and_lists_its_buckets_newest_first() {
        let mut ch = channel("lev-a1", "ch3", 32.5, Quality::Good, 5);
        ch.last_raw = Some(2417.25);
        let view = SiteView::new(NOW, [ch.clone()].into_iter(), std::iter::empty());
        let stats = HistoryStats {
            available: true,
            window: crate::history::DEFAULT_WINDOW,
            kept: crate::history::DEFAULT_WINDOW,
            ..HistoryStats::default()
        };
        let page = channel_page(&view, &stats, Some(&ch), Lang::Zh);
        assert!(page.contains("<svg"), "a chart");
        // The mean line: one polyline of the two good buckets (the bad-only one is not drawn).
        let mean_lines = page
            .split("<polyline")
            .skip(1)
            .filter(|p| {
                p.split("/>")
                    .next()
                    .is_some_and(|p| p.contains(r##"stroke="#1E6FD9""##))
            })
            .count();
        assert_eq!(mean_lines, 1, "{page}");
        assert_eq!(page.matches("<circle").count(), 2, "a dot per good bucket");
        assert!(page.contains(r#"<span class="buckets">2</span>"#));
        assert!(page.contains(r#"<span class="readings">4</span>"#));
        // Newest first: the -50 s bucket, then -60 s, then the bad-only one.
        let rows: Vec<&str> = page.split("<tr class=\"bucket\"").skip(1).collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].contains("2026-11-30 14:59:10") && rows[0].contains(r#"data-v="4""#));
        assert!(
            rows[1].contains(r#"class="num min" data-v="1""#)
                && rows[1].contains(r#"class="num max" data-v="3""#)
        );
        assert!(
            rows[2].contains("<td class=\"num\">0</td><td class=\"num\">2</td>"),
            "{}",
            rows[2]
        );
        assert!(
            page.contains(">32.5 mm<") && page.contains(">2417.25<"),
            "latest and raw"
        );
        assert!(page.contains(r#"href="/device?name=lev-a1""#));
        assert!(page.contains(r#"href="/channel?key=lev-a1%2Fch3&amp;span=24h""#));
        assert!(
            page.contains(r#"href="/channel?key=lev-a1%2Fch3&amp;span=1h&amp;lang=en""#),
            "the language switch keeps the span"
        );
    }

    fn channel_page(
        view: &SiteView,
        stats: &HistoryStats,
        ch: Option<&ChannelView>,
        lang: Lang,
    ) -> String {
        super::channel(
            &context(view, Some(stats)),
            "lev-a1/ch3",
            ch,
            &curve(),
            Span::Hour,
            lang,
        )
        .into_string()
    }

    #[test]
    fn without_history_or_with_a_shortened_one_the_pages_say_so() {
        let view = SiteView::default();
        let page = super::channel(
            &context(&view, None),
            "x/y",
            None,
            &Curve::default(),
            Span::Day,
            Lang::En,
        )
        .into_string();
        assert!(page.contains("no local history is kept"), "{page}");
        assert!(page.contains("the engine holds no reading of this channel now"));
        let short = HistoryStats {
            available: true,
            window: crate::history::DEFAULT_WINDOW,
            kept: std::time::Duration::from_secs(3 * 24 * 3600),
            ..HistoryStats::default()
        };
        let page = channel_page(&view, &short, None, Lang::En);
        assert!(page.contains("keeps only 3days"), "{page}");
        let gone = HistoryStats {
            reason: Some("given up for free space: ...".into()),
            ..HistoryStats::default()
        };
        let page = channel_page(&view, &gone, None, Lang::Zh);
        assert!(
            page.contains("本地历史暂不可用：given up for free space"),
            "{page}"
        );
    }

    #[test]
    fn the_device_page_lists_its_channels_with_raw_values_and_a_curve_each() {
        let mut a = channel("vw-1", "ch1", 12.5, Quality::Good, 5);
        a.last_raw = Some(2417.25);
        let b = channel("vw-1", "ch2", 0.0, Quality::Timeout, 5);
        let view = SiteView::new(NOW, [a.clone(), b.clone()].into_iter(), std::iter::empty());
        let curves = vec![(&a, curve()), (&b, Curve::default())];
        let page = device(
            &context(&view, None),
            "vw-1",
            &[],
            &curves,
            Span::Hour,
            Lang::Zh,
        )
        .into_string();
        let rows: Vec<&str> = page.split("<tr class=\"channel\"").skip(1).collect();
        assert_eq!(rows.len(), 2);
        assert!(
            rows[0].contains(">12.5 mm<") && rows[0].contains(">2417.25<"),
            "{}",
            rows[0]
        );
        assert!(rows[1].contains("超时 ("), "{}", rows[1]);
        assert_eq!(page.matches("<svg").count(), 2, "a curve per channel");
        assert!(page.contains("设备 vw-1 · xa"));
    }

    #[test]
    fn the_alert_history_lists_events_and_the_active_alerts_have_the_form() {
        let active = alert();
        let view = SiteView::new(NOW, std::iter::empty(), [active.clone()].iter());
        let mut acked = alert();
        acked.state = AlertState::Acknowledged;
        acked.event_at = NOW - 30 * NANOS_PER_SEC;
        acked.ack = Some(crate::alert::Acknowledgement {
            by: "监理 王工".into(),
            note: "现场核查".into(),
            at: NOW - 30 * NANOS_PER_SEC,
        });
        let mut cleared = alert();
        cleared.state = AlertState::Cleared;
        let events = [acked, active.clone(), cleared];
        let page = alert_log(&context(&view, None), &events, Lang::Zh).into_string();
        assert!(
            page.contains(&format!(r#"name="id" value="{}""#, active.id)),
            "the form"
        );
        assert!(page.contains("告警事件 (3)"));
        let rows: Vec<&str> = page.split("<tr class=\"event\"").skip(1).collect();
        assert_eq!(rows.len(), 3);
        assert!(
            rows[0].contains(r#"data-state="acknowledged""#)
                && rows[0].contains("<td>消警</td>")
                && rows[0].contains("监理 王工 · 现场核查")
        );
        assert!(rows[1].contains("<td>告警</td>") && rows[1].contains("background:#e8730c"));
        assert!(rows[2].contains("<td>解除</td>"));
    }

    #[test]
    fn spans_read_their_tier() {
        assert_eq!(Span::from_param(Some("7d"), Span::Hour), Span::Week);
        assert_eq!(Span::from_param(Some("1y"), Span::Day), Span::Day);
        assert_eq!(Span::Hour.tier().width_secs, 10);
        assert_eq!(Span::Day.tier().width_secs, 300);
        assert_eq!(Span::Week.tier().width_secs, 1800);
        // Each span fits in what its tier keeps.
        for s in Span::ALL {
            assert!(s.tier().keep.as_secs() >= s.secs().unsigned_abs(), "{s:?}");
        }
    }
}
