//! The daily report from a history of known readings and alert events: the values, the change
//! and rate, the offline devices, the alert counts, and where it is kept.

use super::*;
use crate::alert::Alert;
use crate::history::{HistorySettings, HISTORY_FILE};
use crate::model::{Quality, Series};

const H: TimestampNs = 3600 * NANOS_PER_SEC;
const M: TimestampNs = 60 * NANOS_PER_SEC;

fn series(device: &str, point: &str, kind: QuantityKind, unit: &str) -> std::sync::Arc<Series> {
    std::sync::Arc::new(Series::new(
        "xa",
        "gw-1",
        device,
        point,
        kind,
        unit,
        &BTreeMap::new(),
    ))
}

fn event(state: AlertState, at: TimestampNs) -> Alert {
    Alert {
        state,
        event_at: at,
        detected_at: at,
        started_at: at,
        ..crate::alert::tests::settlement_alert()
    }
}

#[test]
fn days_are_local_days() {
    let d = Day::parse("2026-11-28").expect("date");
    // 2026-11-28 00:00 UTC+8 = 2026-11-27 16:00 UTC = 1795795200 s.
    assert_eq!(d.start_ns, 1_795_795_200 * NANOS_PER_SEC);
    assert_eq!(Day::of(d.start_ns), d);
    assert_eq!(Day::of(d.end_ns() - 1), d);
    assert_eq!(Day::of(d.end_ns()).date, "2026-11-29");
    assert_eq!(d.previous().date, "2026-11-27");
    for bad in ["2026-11-31", "28.11.2026", "2026-1-28", ""] {
        assert!(Day::parse(bad).is_err(), "{bad}");
    }
    // Due at 07:30 local: before it, today's; after it, tomorrow's.
    let at = 7 * 3600 + 30 * 60;
    assert_eq!(next_due(d.start_ns + H, at), d.start_ns + 7 * H + 30 * M);
    assert_eq!(
        next_due(d.start_ns + 8 * H, at),
        d.end_ns() + 7 * H + 30 * M
    );
}

#[test]
fn the_report_gives_each_watch_its_day_offline_devices_and_alert_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = History::open(
        &dir.path().join(HISTORY_FILE),
        HistorySettings::default(),
        0,
    );
    let day = Day::parse("2026-11-28").expect("date");
    let t0 = day.start_ns;
    let cell = series("lev-a", "ch1", QuantityKind::Settlement, "mm");
    let temp = series("raft-b", "core", QuantityKind::Temperature, "°C");
    let supply = series("lev-a", "supply", QuantityKind::Voltage, "V");
    let gone = series("tc-9", "x", QuantityKind::Tilt, "°");
    // Removed from the site two days before: not in the report at all.
    let removed = series("old-1", "x", QuantityKind::Tilt, "°");
    h.record(&removed, t0 - 30 * H, Some(0.1), Quality::Good);
    // lev-a/ch1: 1.0 at 00:10, 2.0 at 06:10, 4.0 and 5.0 at 12:10 and 12:20, a bad one at 12:15.
    for (at, v) in [
        (10 * M, 1.0),
        (6 * H + 10 * M, 2.0),
        (12 * H + 10 * M, 4.0),
        (12 * H + 20 * M, 5.0),
    ] {
        h.record(&cell, t0 + at, Some(v), Quality::Good);
    }
    h.record(&cell, t0 + 12 * H + 15 * M, None, Quality::Timeout);
    // lev-a/supply: every 30 min all day (the device is online whenever its supply reports).
    for i in 0..48 {
        h.record(&supply, t0 + i * 30 * M + M, Some(12.0), Quality::Good);
    }
    // raft-b/core: 20 °C at 01:00 only. tc-9: only the day before.
    h.record(&temp, t0 + H, Some(20.0), Quality::Good);
    h.record(&gone, t0 - 2 * H, Some(0.1), Quality::Good);
    h.record_alert(&event(AlertState::Raised, t0 + 6 * H + 10 * M));
    h.record_alert(&event(AlertState::Acknowledged, t0 + 7 * H));
    h.record_alert(&event(AlertState::Cleared, t0 + 13 * H));
    h.record_alert(&event(AlertState::Raised, t0 - H));
    let now = day.end_ns() + H;
    h.flush(now);

    let page = render(&h, &day, "xa", "gw-1", now).into_string();
    let row = |key: &str| -> &str {
        page.split(&format!("<tr class=\"channel\" data-key=\"{key}\">"))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_else(|| panic!("no row for {key}"))
    };
    // Latest: the last 30 min bucket's mean (12:00-12:30: 4.5); change from the first (1.0);
    // rate over the 12 h between them, per day; min, max, 4 good readings, 1 bad.
    let cell_row = row("lev-a/ch1");
    assert!(cell_row.contains(">4.5 mm<"), "{cell_row}");
    assert!(cell_row.contains(">+3.5 mm<"), "{cell_row}");
    assert!(cell_row.contains(">+7 mm/d<"), "{cell_row}");
    assert!(cell_row.contains("<td class=\"num\">1</td><td class=\"num\">5</td><td class=\"num\">4</td><td class=\"num\">1</td>"), "{cell_row}");
    // One bucket: no rate.
    let temp_row = row("raft-b/core");
    assert!(
        temp_row.contains(">20 °C<") && temp_row.contains(">0 °C<") && temp_row.contains(">—<"),
        "{temp_row}"
    );
    // A watch channel without a reading that day says so; the supply is in no watch.
    assert!(row("tc-9/x").contains("当日无有效读数"));
    assert!(!page.contains("data-key=\"lev-a/supply\""));
    assert!(
        !page.contains("old-1"),
        "a channel silent since the day before yesterday"
    );
    let settlement = page.find("沉降观测").expect("settlement watch");
    let curing = page.find("混凝土养护").expect("curing watch");
    let slope = page.find("边坡监测").expect("slope watch");
    assert!(settlement < curing && curing < slope);
    // A curve for each channel with readings that day (ch1, core), none for tc-9.
    assert_eq!(page.matches("<svg").count(), 2);
    // Alert events of the day only, counted by state.
    assert!(page.contains("Alert events (3)"), "{page}");
    assert!(page.contains("<td class=\"num raised\">1</td>"));
    assert!(page.contains("<td class=\"num cleared\">1</td>"));
    assert!(page.contains("<td class=\"num acked\">1</td>"));
    // Offline: raft-b after 01:30 (until 24:00), tc-9 all day; lev-a never (its supply).
    let offline: Vec<&str> = page.split("<tr class=\"offline\"").skip(1).collect();
    assert_eq!(offline.len(), 2, "{offline:?}");
    assert!(
        offline[0].contains("raft-b")
            && offline[0].contains("2026-11-28 01:30:00")
            && offline[0].contains("2026-11-29 00:00:00")
            && offline[0].contains("22h 30m"),
        "{}",
        offline[0]
    );
    assert!(
        offline[1].contains("tc-9")
            && offline[1].contains("2026-11-28 00:00:00")
            && offline[1].contains(">1day<"),
        "{}",
        offline[1]
    );
    assert!(
        !page.contains("No readings at all"),
        "the site had readings all day"
    );

    // The summary the notice announces: the same day in numbers (channels ch1, supply, core and
    // tc-9's; 4 + 48 + 1 good readings, ch1's timeout; the three events; raft-b and tc-9 offline).
    let (_, summary) = compose(&h, &day, "xa", "gw-1", now);
    assert_eq!(
        summary,
        Summary {
            date: "2026-11-28".to_owned(),
            channels: 4,
            readings: 53,
            bad: 1,
            raised: 1,
            escalated: 0,
            cleared: 1,
            acknowledged: 1,
            offline: vec!["raft-b".to_owned(), "tc-9".to_owned()],
        }
    );
    let zh = summary.notice("xa", "gw-1", crate::alert::Language::Zh, now);
    assert_eq!(
        zh.message,
        "【日报】2026-11-28 工地 xa：4 个测点，有效读数 53，异常读数 1；告警 1 起，升级 0，解除 1，消警 1；离线设备 2 台（raft-b、tc-9）。详见网关 gw-1 控制台 /report?date=2026-11-28"
    );
    assert_eq!(
        (zh.kind, zh.state, zh.cause, zh.level),
        (
            crate::alert::AlertKind::Notice,
            AlertState::Notice,
            crate::alert::Cause::Report,
            crate::alert::Level::Blue
        )
    );
    let en = summary.notice("xa", "gw-1", crate::alert::Language::En, now + H);
    assert_eq!(en.id, zh.id, "one notice per day, whenever it is made");
    assert!(
        en.message.starts_with("[Daily report] 2026-11-28 site xa: 4 channels, 53 good readings, 1 bad; 1 alerts raised")
            && en.message.contains("2 device(s) offline (raft-b, tc-9)"),
        "{}",
        en.message
    );

    // Kept in data_dir/reports, listed newest first.
    let (path, _) = make(&h, dir.path(), &day, "xa", "gw-1", now).expect("made");
    assert_eq!(path, dir.path().join("reports").join("2026-11-28.html"));
    assert!(std::fs::read_to_string(&path)
        .expect("read")
        .contains("监理日报 2026-11-28 · xa"));
    let _ = make(&h, dir.path(), &day.previous(), "xa", "gw-1", now).expect("made");
    assert_eq!(list(dir.path()), ["2026-11-28", "2026-11-27"]);
}

#[test]
fn before_the_gateway_ran_no_device_is_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = History::open(
        &dir.path().join(HISTORY_FILE),
        HistorySettings::default(),
        0,
    );
    let day = Day::parse("2026-11-28").expect("date");
    let a = series("lev-a", "ch1", QuantityKind::Settlement, "mm");
    let b = series("lev-b", "ch1", QuantityKind::Settlement, "mm");
    // Both from 10:00 (the gateway's first run that day); lev-b stops at 14:00.
    for i in 0..28 {
        h.record(
            &a,
            day.start_ns + 10 * H + i * 30 * M,
            Some(1.0),
            Quality::Good,
        );
        if i < 8 {
            h.record(
                &b,
                day.start_ns + 10 * H + i * 30 * M,
                Some(1.0),
                Quality::Good,
            );
        }
    }
    h.flush(day.end_ns());
    let page = render(&h, &day, "xa", "gw-1", day.end_ns()).into_string();
    assert!(page.contains("No readings at all"));
    let site = page.split("site-gaps").nth(1).expect("site gaps");
    assert!(site.contains("2026-11-28 00:00:00") && site.contains("2026-11-28 10:00:00"));
    let offline: Vec<&str> = page.split("<tr class=\"offline\"").skip(1).collect();
    assert_eq!(offline.len(), 1, "{offline:?}");
    assert!(
        offline[0].contains("lev-b")
            && offline[0].contains("2026-11-28 14:00:00")
            && offline[0].contains(">10h<"),
        "{}",
        offline[0]
    );
}

#[test]
fn a_day_the_history_does_not_hold_is_reported_as_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = History::open(
        &dir.path().join(HISTORY_FILE),
        HistorySettings::default(),
        0,
    );
    let day = Day::parse("2026-01-01").expect("date");
    let page = render(&h, &day, "xa", "gw-1", day.end_ns()).into_string();
    assert!(page.contains("本地历史中没有该日的数据"));
}

#[test]
fn report_config_defaults_and_bad_times() {
    let c: ReportConfig = toml::from_str("").expect("parses");
    assert_eq!(
        c.validate("console.report"),
        Ok(Some(ReportSettings {
            at_secs: 7 * 3600 + 30 * 60,
            notify: true,
        }))
    );
    let quiet: ReportConfig = toml::from_str("notify = false").expect("parses");
    assert_eq!(
        quiet
            .validate("console.report")
            .map(|s| s.map(|s| s.notify)),
        Ok(Some(false))
    );
    let off: ReportConfig = toml::from_str("enabled = false").expect("parses");
    assert_eq!(off.validate("console.report"), Ok(None));
    for bad in ["24:00", "7:30", "07:60", "noon"] {
        let c: ReportConfig = toml::from_str(&format!("at = \"{bad}\"")).expect("parses");
        let (field, message) = c.validate("console.report").expect_err(bad);
        assert_eq!(field, "console.report.at");
        assert!(message.contains("HH:MM"), "{message}");
    }
}

#[tokio::test]
async fn gateway_report_reads_the_history_file_itself_while_the_service_is_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "site = \"xa\"\ngateway_id = \"gw-1\"\ndata_dir = \"{}\"\n",
        dir.path().display()
    );
    let cfg =
        crate::config::Config::from_str_at(&text, &dir.path().join("site.toml")).expect("config");
    let day = Day::parse("2026-11-28").expect("date");
    // No history yet: said so, nothing made.
    let none = on_demand(&cfg, &day.date).await.expect_err("no history");
    assert!(
        matches!(&none, OnDemandError::Unavailable(m) if m.starts_with("no local history at")),
        "{none}"
    );
    {
        let h = History::open(
            &dir.path().join(HISTORY_FILE),
            HistorySettings::default(),
            0,
        );
        let cell = series("lev-a", "ch1", QuantityKind::Settlement, "mm");
        h.record(&cell, day.start_ns + H, Some(2.5), Quality::Good);
        h.flush(day.end_ns());
    }
    let path = on_demand(&cfg, &day.date).await.expect("made");
    assert_eq!(path, dir.path().join("reports").join("2026-11-28.html"));
    let page = std::fs::read_to_string(&path).expect("read");
    assert!(page.contains("data-key=\"lev-a/ch1\"") && page.contains(">2.5 mm<"));
    assert!(matches!(
        on_demand(&cfg, "28/11/2026").await,
        Err(OnDemandError::Date(_))
    ));
    // While another process (here: this one) holds the file and no console answers, it says
    // both.
    let _held = History::open(
        &dir.path().join(HISTORY_FILE),
        HistorySettings::default(),
        0,
    );
    let e = on_demand(&cfg, &day.date).await.expect_err("held");
    let text = e.to_string();
    assert!(text.contains("open in another process"), "{text}");
}
