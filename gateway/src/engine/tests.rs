//! The engine with a real spool: readings are committed, alerts are committed with their rule
//! state, and a restart in the middle of an active alert neither raises it again nor loses the
//! clear.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::rules::{AlertsConfig, RuleSet};
use super::{Engine, EngineConfig};
use crate::alert::{Alert, AlertState};
use crate::metrics::Metrics;
use crate::model::{now_ns, QuantityKind, Reading, Series, SystemClock};
use crate::sources::ReadingBatch;
use crate::spool::{Spool, SpoolConfig, Stream};

const RULES: &str = r#"
[[rules]]
name = "settlement-total"
kind = "absolute"
select = { kind = "settlement" }
upper = { alarm = 30.0, yellow = 0.7, red = 1.0 }
confirm = { count = 2 }
clear = { deadband = 0.1, count = 2 }
"#;

fn rules() -> RuleSet {
    let cfg: AlertsConfig = toml::from_str(RULES).expect("rules parse");
    RuleSet::from_config(&cfg, "alerts").expect("rules valid")
}

/// Run an engine over `values` (one reading each, 1 s apart from `t0`) and wait for it to
/// commit everything.
async fn run_engine(spool: &Arc<Spool>, series: &Arc<Series>, t0: i64, values: &[f64]) {
    let (tx, rx) = mpsc::channel(16);
    let engine = Engine::new(
        rx,
        Arc::clone(spool),
        Arc::new(Metrics::new()),
        Arc::new(SystemClock),
        EngineConfig::default(),
        Duration::from_secs(3600),
        rules(),
        "xa",
    );
    let task = tokio::spawn(engine.run());
    for (i, v) in values.iter().enumerate() {
        let ts = t0 + i64::try_from(i).expect("small") * 1_000_000_000;
        let batch = ReadingBatch::from(vec![Reading::good(Arc::clone(series), ts, *v)]);
        tx.send(batch).await.expect("engine alive");
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("engine stops")
        .expect("no panic");
}

fn alerts(spool: &Spool) -> Vec<Alert> {
    let mut out = Vec::new();
    while let Some(batch) = spool
        .read_batch(Stream::Alerts, "reader", 1000)
        .expect("read")
    {
        for line in batch.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            out.push(serde_json::from_slice(line).expect("alert JSON"));
        }
        spool.ack(Stream::Alerts, "reader", &batch).expect("ack");
    }
    out
}

#[tokio::test]
async fn an_alert_survives_a_restart_without_a_second_raise_and_still_clears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spool.redb");
    let open = || {
        Arc::new(
            Spool::open(&path, &SpoolConfig::default(), &["reader".to_owned()]).expect("spool"),
        )
    };
    let series = Arc::new(Series::new(
        "xa",
        "gw",
        "lev-a1",
        "ch3",
        QuantityKind::Settlement,
        "mm",
        &BTreeMap::new(),
    ));
    // Recent timestamps, so the engine's plausibility check accepts them.
    let t0 = now_ns() - 600 * 1_000_000_000;

    // 12 mm, then 31 and 32 mm: the second reading above 30 confirms the raise (red: ≥ 100 %).
    let spool = open();
    run_engine(&spool, &series, t0, &[12.0, 31.0, 32.0]).await;
    let first = alerts(&spool);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].state, AlertState::Raised);
    assert_eq!(first[0].channel, "lev-a1/ch3");
    assert_eq!(first[0].value, Some(32.0));
    let id = first[0].id.clone();
    drop(spool);

    // Restart: two readings still above the alarm (enough to confirm a raise) → no second raise. Then twice below the lowest level's
    // threshold minus the 10 % deadband (21 × 0.9 = 18.9 mm) → one clear, same id.
    let spool = open();
    run_engine(
        &spool,
        &series,
        t0 + 10_000_000_000,
        &[33.0, 34.0, 15.0, 14.0],
    )
    .await;
    let second = alerts(&spool);
    assert!(
        second.iter().all(|a| a.state != AlertState::Raised),
        "raised again after restart: {second:?}"
    );
    let clears: Vec<&Alert> = second
        .iter()
        .filter(|a| a.state == AlertState::Cleared)
        .collect();
    assert_eq!(clears.len(), 1, "{second:?}");
    assert_eq!(clears[0].id, id);

    // Every reading is in the points stream too, plus the two alert events as `alerts` points.
    let mut lines = 0;
    while let Some(batch) = spool
        .read_batch(Stream::Points, "reader", 1000)
        .expect("read")
    {
        lines += batch.records;
        spool.ack(Stream::Points, "reader", &batch).expect("ack");
    }
    let events = u64::try_from(first.len() + second.len()).expect("small");
    assert_eq!(
        lines,
        7 + events,
        "seven readings plus one `alerts` point per alert event"
    );
}
