//! The engine with a real spool: readings are committed, alerts are committed with their rule
//! state, and a restart in the middle of an active alert neither raises it again nor loses the
//! clear.

use crate::metrics::Counter;
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
/// An engine on `spool` as most tests here want it: the default config, [`rules`], site `xa`,
/// with `metrics` and `clock`.
fn engine_on(
    rx: crate::sources::ReadingRx,
    spool: &Arc<Spool>,
    metrics: &Arc<Metrics>,
    clock: Arc<dyn crate::model::Clock>,
) -> Engine {
    Engine::new(
        rx,
        Arc::clone(spool),
        Arc::clone(metrics),
        clock,
        EngineConfig::default(),
        Duration::from_secs(3600),
        rules(),
        "xa",
    )
}

async fn run_engine(spool: &Arc<Spool>, series: &Arc<Series>, t0: i64, values: &[f64]) {
    run_engine_split(spool, spool, series, t0, values).await;
}

/// [`run_engine`] with the points committed to `points` and the alerts and rule state to
/// `alerts_file` (the gateway's two files).
async fn run_engine_split(
    points: &Arc<Spool>,
    alerts_file: &Arc<Spool>,
    series: &Arc<Series>,
    t0: i64,
    values: &[f64],
) {
    let (tx, rx) = mpsc::channel(16);
    let engine = engine_on(rx, points, &Arc::new(Metrics::new()), Arc::new(SystemClock))
        .with_alerts_spool(Arc::clone(alerts_file));
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

/// Every alert event in the alerts stream of `spool` (read and acknowledged as `reader`).
/// A spool in `dir` with one reader, `reader`, for the engine tests (opened again after a
/// simulated restart the same way).
pub(crate) fn spool_in(dir: &std::path::Path) -> Arc<Spool> {
    Arc::new(
        Spool::open(
            &dir.join("spool.redb"),
            &SpoolConfig::default(),
            &["reader".to_owned()],
        )
        .expect("spool"),
    )
}

/// Every point line in the points stream of `spool`, drained (read and acknowledged as
/// `reader`).
fn point_lines(spool: &Spool) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(batch) = spool
        .read_batch(Stream::Points, "reader", 10_000)
        .expect("read")
    {
        out.extend(
            String::from_utf8_lossy(&batch.body)
                .lines()
                .map(str::to_owned),
        );
        spool.ack(Stream::Points, "reader", &batch).expect("ack");
    }
    out
}

pub(super) fn alerts(spool: &Spool) -> Vec<Alert> {
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
    let open = || spool_in(dir.path());
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

/// Failure paths with injected spool faults (a fake, see `InjectedFault`).
mod spool_faults {
    use tokio::sync::oneshot;

    use super::*;
    use crate::spool::InjectedFault;

    fn setup() -> (tempfile::TempDir, Arc<Spool>, Arc<Series>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = spool_in(dir.path());
        let series = Arc::new(Series::new(
            "xa",
            "gw",
            "lev-a1",
            "ch3",
            QuantityKind::Settlement,
            "mm",
            &BTreeMap::new(),
        ));
        (dir, spool, series)
    }

    use super::point_lines as points;

    struct Running {
        tx: mpsc::Sender<ReadingBatch>,
        task: tokio::task::JoinHandle<()>,
        metrics: Arc<Metrics>,
    }

    fn start(spool: &Arc<Spool>) -> Running {
        start_with(
            spool,
            EngineConfig {
                flush_interval: Some(Duration::from_millis(10)),
                ..EngineConfig::default()
            },
            64,
        )
    }

    /// An engine with `cfg` on `spool`, reading from a channel of `capacity` batches.
    fn start_with(spool: &Arc<Spool>, cfg: EngineConfig, capacity: usize) -> Running {
        let (tx, rx) = mpsc::channel(capacity);
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::new(
            rx,
            Arc::clone(spool),
            Arc::clone(&metrics),
            Arc::new(SystemClock),
            cfg,
            Duration::from_secs(3600),
            rules(),
            "xa",
        );
        Running {
            tx,
            task: tokio::spawn(engine.run()),
            metrics,
        }
    }

    impl Running {
        /// Send one reading with a commit notice; the receiver of the notice.
        async fn send(&self, series: &Arc<Series>, ts: i64, v: f64) -> oneshot::Receiver<()> {
            let (ack, committed) = oneshot::channel();
            let batch = ReadingBatch {
                readings: vec![Reading::good(Arc::clone(series), ts, v)],
                on_commit: Some(ack),
            };
            self.tx.send(batch).await.expect("engine alive");
            committed
        }

        async fn stop(self) -> Arc<Metrics> {
            drop(self.tx);
            tokio::time::timeout(Duration::from_secs(30), self.task)
                .await
                .expect("engine stops")
                .expect("no panic");
            self.metrics
        }
    }

    /// Wait at most `secs` seconds for the signal of `rx` (a commit notice, a gate reached);
    /// `what` says what did not happen otherwise.
    async fn within(secs: u64, rx: oneshot::Receiver<()>, what: &str) {
        tokio::time::timeout(Duration::from_secs(secs), rx)
            .await
            .expect(what)
            .expect("signal sent, not dropped");
    }

    /// `spooled` readings were committed, none dropped, after exactly `failures` failed commits.
    fn assert_spooled_after_failures(metrics: &Metrics, spooled: u64, failures: u64) {
        assert_eq!(metrics.total(Counter::SpoolErrors), failures);
        assert_eq!(metrics.total(Counter::ReadingsDropped), 0);
        assert_eq!(metrics.total(Counter::ReadingsSpooled), spooled);
    }

    /// Wait (at most 30 s each) for every commit notice of `notices`.
    async fn all_acknowledged(notices: Vec<oneshot::Receiver<()>>) {
        for n in notices {
            within(30, n, "committed once the spool works").await;
        }
    }

    #[tokio::test]
    async fn failed_point_commits_are_held_retried_with_backoff_and_acknowledged_only_after() {
        let (_dir, spool, series) = setup();
        // Six failures in a row: errors and a panic in the commit task.
        spool.inject_faults(&[
            InjectedFault::Error,
            InjectedFault::Panic,
            InjectedFault::Error,
            InjectedFault::Error,
            InjectedFault::Panic,
            InjectedFault::Error,
        ]);
        let engine = start(&spool);
        let t0 = now_ns() - 60_000_000_000;
        let mut notices = Vec::new();
        for i in 0..50 {
            notices.push(engine.send(&series, t0 + i * 1_000_000, 1.0).await);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Nothing is committed while the faults last, so no notice has fired yet.
        assert!(notices.iter_mut().all(|n| n.try_recv().is_err()));
        all_acknowledged(notices).await;
        let metrics = engine.stop().await;
        // Every reading is stored once, in order, none lost to the panics.
        let lines = points(&spool);
        assert_eq!(lines.len(), 50, "{lines:?}");
        // Exactly the six injected failures were attempts: retries waited for the backoff
        // instead of hammering the disk with every incoming batch.
        assert_spooled_after_failures(&metrics, 50, 6);
    }

    #[tokio::test]
    async fn points_wait_while_their_alerts_cannot_be_committed_and_no_alert_is_lost() {
        let (_dir, spool, series) = setup();
        let engine = start(&spool);
        let t0 = now_ns() - 60_000_000_000;
        // 31 and 32 mm confirm a raise; its alert commit fails twice (one panic).
        spool.inject_faults(&[InjectedFault::Panic, InjectedFault::Error]);
        let first = engine.send(&series, t0, 31.0).await;
        let second = engine.send(&series, t0 + 1_000_000_000, 32.0).await;
        tokio::time::timeout(Duration::from_secs(30), async {
            assert!(first.await.is_ok());
            assert!(second.await.is_ok());
        })
        .await
        .expect("committed after the faults");
        engine.stop().await;
        let raised = alerts(&spool);
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0].state, AlertState::Raised);
        // The readings and the alert's point, each once.
        let lines = points(&spool);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines.iter().filter(|l| l.starts_with("alerts,")).count(), 1);
    }

    #[tokio::test]
    async fn held_lines_larger_than_one_chunk_are_committed_in_pieces_and_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The smallest bound: one points chunk takes well under 1 MiB.
        let spool = Arc::new(
            Spool::open(
                &dir.path().join("spool.redb"),
                &SpoolConfig {
                    max_bytes: 1 << 20,
                    ..SpoolConfig::default()
                },
                &["reader".to_owned()],
            )
            .expect("spool"),
        );
        let (_d, _s, series) = setup();
        let limit = spool.max_chunk_bytes(Stream::Points);
        let (tx, rx) = mpsc::channel(64);
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::new(
            rx,
            Arc::clone(&spool),
            Arc::clone(&metrics),
            Arc::new(SystemClock),
            EngineConfig {
                flush_interval: Some(Duration::from_secs(10)),
                flush_max_records: Some(50_000),
                ..EngineConfig::default()
            },
            Duration::from_secs(3600),
            rules(),
            "xa",
        );
        let task = tokio::spawn(engine.run());
        let t0 = now_ns() - 60_000_000_000;
        // 12,000 lines of about 100 bytes, held together: more than one chunk may take.
        for b in 0..24_i64 {
            let readings: Vec<Reading> = (0..500_i64)
                .map(|i| Reading::good(Arc::clone(&series), t0 + (b * 500 + i) * 1000, 1.0))
                .collect();
            tx.send(ReadingBatch::from(readings)).await.expect("alive");
        }
        let (ack, committed) = oneshot::channel();
        tx.send(ReadingBatch {
            readings: vec![Reading::good(Arc::clone(&series), t0 + 13_000_000, 2.0)],
            on_commit: Some(ack),
        })
        .await
        .expect("alive");
        tokio::time::timeout(Duration::from_secs(30), committed)
            .await
            .expect("committed, not stuck on a chunk above the bound")
            .expect("notice sent");
        drop(tx);
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("engine stops")
            .expect("no panic");
        assert!(
            12_001 * 90 > limit,
            "the test must hold more than one chunk"
        );
        assert_eq!(metrics.total(Counter::ReadingsSpooled), 12_001);
        assert_eq!(metrics.total(Counter::SpoolErrors), 0);
    }

    #[tokio::test]
    async fn readings_at_the_ends_of_time_are_rejected_and_counted_without_overflow() {
        let (_dir, spool, series) = setup();
        let engine = start(&spool);
        for ts in [i64::MIN, i64::MIN + 1, i64::MAX, 0] {
            drop(engine.send(&series, ts, 1.0).await);
        }
        let metrics = engine.stop().await;
        assert_eq!(metrics.total(Counter::ReadingsRejected), 4);
        assert_eq!(metrics.total(Counter::ReadingsSpooled), 0);
    }

    #[tokio::test]
    async fn readings_that_cannot_be_committed_at_shutdown_are_counted_not_claimed() {
        let (_dir, spool, series) = setup();
        let engine = start(&spool);
        let t0 = now_ns() - 60_000_000_000;
        // Fail everything from now on: more faults than the engine will try.
        spool.inject_faults(&[InjectedFault::Error; 64]);
        let _notices = [
            engine.send(&series, t0, 1.0).await,
            engine.send(&series, t0 + 1, 2.0).await,
            engine.send(&series, t0 + 2, 3.0).await,
        ];
        let metrics = engine.stop().await;
        assert_eq!(
            metrics.get(
                Counter::ReadingsDropped,
                &[("reason", "uncommitted_at_shutdown")]
            ),
            3
        );
        assert_eq!(metrics.total(Counter::ReadingsSpooled), 0);
    }

    /// The time of a stored line (its last field).
    fn line_ts(line: &str) -> i64 {
        line.rsplit(' ')
            .next()
            .and_then(|t| t.parse().ok())
            .expect("line ends with its time")
    }

    #[tokio::test]
    async fn an_alert_is_committed_while_a_slow_points_commit_is_in_flight() {
        let (_dir, spool, series) = setup();
        let engine = start(&spool);
        let t0 = now_ns() - 60_000_000_000;
        // The commit of the first reading is held at its start: a disk in an fsync stall.
        let (arrived, go) = spool.hold_next_points_append();
        let mut first = engine.send(&series, t0, 12.0).await;
        within(5, arrived, "the points commit reached its gate").await;
        // 31 and 32 mm confirm a raise (alarm 30, two readings) while that commit is in flight.
        let mut second = engine.send(&series, t0 + 1_000_000_000, 31.0).await;
        let mut third = engine.send(&series, t0 + 2_000_000_000, 32.0).await;
        let raised = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let found = alerts(&spool);
                if !found.is_empty() {
                    return found;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the alert is committed without waiting for the points commit");
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0].state, AlertState::Raised);
        assert_eq!(raised[0].value, Some(32.0));
        // The points commit is still held: no point stored, no reading acknowledged.
        assert!(points(&spool).is_empty());
        assert!(first.try_recv().is_err());
        assert!(second.try_recv().is_err());
        assert!(third.try_recv().is_err());
        go.send(()).expect("commit waiting at the gate");
        all_acknowledged(vec![first, second, third]).await;
        let metrics = engine.stop().await;
        // The three readings in order, and the alert's point, each once.
        let lines = points(&spool);
        let readings: Vec<i64> = lines
            .iter()
            .filter(|l| l.starts_with("settlement,"))
            .map(|l| line_ts(l))
            .collect();
        assert_eq!(
            readings,
            vec![t0, t0 + 1_000_000_000, t0 + 2_000_000_000],
            "{lines:?}"
        );
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(metrics.total(Counter::SpoolErrors), 0);
    }

    #[tokio::test]
    async fn a_failed_background_commit_is_retried_with_what_came_meanwhile_each_line_once_in_order(
    ) {
        let (_dir, spool, series) = setup();
        let engine = start(&spool);
        let t0 = now_ns() - 60_000_000_000;
        let ts = |i: i64| t0 + i * 1_000_000;
        // The first commit is held, then fails (a full disk); the retry panics in its task.
        let (arrived, go) = spool.hold_next_points_append();
        spool.inject_faults(&[InjectedFault::Error, InjectedFault::Panic]);
        let mut notices = vec![engine.send(&series, ts(0), 0.0).await];
        within(5, arrived, "the points commit reached its gate").await;
        // Readings arrive while the failing commit is in flight...
        for i in 1..20 {
            notices.push(engine.send(&series, ts(i), 1.0).await);
        }
        go.send(()).expect("commit waiting at the gate");
        tokio::time::timeout(Duration::from_secs(5), async {
            while engine.metrics.total(Counter::SpoolErrors) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the held commit failed");
        // ...and while it is retried after the backoff.
        for i in 20..40 {
            notices.push(engine.send(&series, ts(i), 2.0).await);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The second attempt waits for the backoff (100 ms) and fails again: nothing acknowledged.
        assert!(notices.iter_mut().all(|n| n.try_recv().is_err()));
        all_acknowledged(notices).await;
        let metrics = engine.stop().await;
        // Every reading stored once, in the order it came, none lost to the failed commits.
        let stored: Vec<i64> = points(&spool).iter().map(|l| line_ts(l)).collect();
        assert_eq!(stored, (0..40).map(ts).collect::<Vec<_>>());
        assert_spooled_after_failures(&metrics, 40, 2);
    }

    #[tokio::test]
    async fn while_a_commit_is_in_flight_the_engine_takes_readings_only_up_to_its_bound() {
        let (_dir, spool, series) = setup();
        const MAX_RECORDS: u32 = 10;
        const CHANNEL: usize = 4;
        let engine = start_with(
            &spool,
            EngineConfig {
                flush_max_records: Some(MAX_RECORDS),
                ..EngineConfig::default()
            },
            CHANNEL,
        );
        let tx = &engine.tx;
        let t0 = now_ns() - 60_000_000_000;
        let reading = |i: i64| {
            ReadingBatch::from(vec![Reading::good(
                Arc::clone(&series),
                t0 + i * 1_000_000,
                1.0,
            )])
        };
        // The first reading's commit (it waits for its notice) is held at its start.
        let (arrived, go) = spool.hold_next_points_append();
        let (ack, committed) = oneshot::channel();
        tx.send(ReadingBatch {
            readings: vec![Reading::good(Arc::clone(&series), t0, 1.0)],
            on_commit: Some(ack),
        })
        .await
        .expect("engine alive");
        within(5, arrived, "the points commit reached its gate").await;
        // Send one reading at a time until the engine stops taking them (a send waits a second).
        let mut sent = 1_i64;
        while tokio::time::timeout(Duration::from_secs(1), tx.send(reading(sent)))
            .await
            .is_ok()
        {
            sent += 1;
            assert!(sent < 1000, "the engine never stopped taking readings");
        }
        // Taken: the bound (two commits' worth), then the channel filled behind it.
        let bound = i64::from(MAX_RECORDS * super::super::PENDING_COMMITS_WHILE_COMMITTING);
        assert_eq!(sent - 1, bound + i64::try_from(CHANNEL).expect("small"));
        go.send(()).expect("commit waiting at the gate");
        within(5, committed, "acknowledged once the commit returned").await;
        // Once the commit returned the engine reads on.
        tokio::time::timeout(Duration::from_secs(5), tx.send(reading(sent)))
            .await
            .expect("taken again")
            .expect("engine alive");
        engine.stop().await;
        let stored: Vec<i64> = points(&spool).iter().map(|l| line_ts(l)).collect();
        assert_eq!(
            stored,
            (0..=sent).map(|i| t0 + i * 1_000_000).collect::<Vec<_>>()
        );
    }
}

/// A clock the test moves.
#[derive(Debug)]
struct TestClock(std::sync::atomic::AtomicI64);

impl crate::model::Clock for TestClock {
    fn now_ns(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn an_idle_channel_is_evicted_and_comes_back_with_its_active_alert() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    let series = Arc::new(Series::new(
        "xa",
        "gw1",
        "lev-a1",
        "ch1",
        QuantityKind::Settlement,
        "mm",
        &BTreeMap::new(),
    ));
    let t0 = now_ns();
    let clock = Arc::new(TestClock(std::sync::atomic::AtomicI64::new(t0)));
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = mpsc::channel(16);
    let cfg = EngineConfig {
        channel_idle_evict: Some(Duration::from_secs(3600)),
        ..EngineConfig::default()
    };
    let engine = Engine::new(
        rx,
        Arc::clone(&spool),
        Arc::clone(&metrics),
        Arc::clone(&clock) as Arc<dyn crate::model::Clock>,
        cfg,
        Duration::from_secs(3600),
        rules(),
        "xa",
    );
    let task = tokio::spawn(engine.run());
    let send = |ts: i64, v: f64| {
        let tx = tx.clone();
        let s = Arc::clone(&series);
        async move {
            tx.send(ReadingBatch::from(vec![Reading::good(s, ts, v)]))
                .await
                .expect("engine alive");
        }
    };
    // 25 mm > 21 mm (0.7 × 30) twice: raised.
    send(t0, 25.0).await;
    send(t0 + 1_000_000_000, 25.0).await;
    // The engine judges readings at its clock's time: let it take the raise first.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metrics.total(Counter::AlertsSpooled) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "not raised");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two hours later the next tick (every second) evicts the channel.
    clock
        .0
        .store(t0 + 2 * 3600 * 1_000_000_000, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metrics.total(Counter::ChannelsEvicted) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "not evicted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.total(Counter::ChannelsEvicted), 1);
    // Back: still over (no second raise), then two readings under the clearing threshold.
    let t1 = t0 + 2 * 3600 * 1_000_000_000;
    send(t1, 25.0).await;
    send(t1 + 1_000_000_000, 1.0).await;
    send(t1 + 2_000_000_000, 1.0).await;
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("engine stops")
        .expect("no panic");
    let got: Vec<(String, AlertState)> = alerts(&spool)
        .into_iter()
        .map(|a| (a.id, a.state))
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].1, AlertState::Raised);
    assert_eq!(got[1], (got[0].0.clone(), AlertState::Cleared));
    assert_eq!(metrics.total(Counter::RuleStateLost), 0);
}

/// Sensor checks on settlement: stuck after 3 equal readings, spikes beyond 5 mm that come
/// back within 10 min, range ±200 mm; no alert rule at all.
const CHECKS: &str = r#"
[[checks]]
select = { kind = "settlement" }
stuck = { count = 3 }
spike = { jump = 5.0, within = "10m" }
range = { min = -200.0, max = 200.0 }
"#;

/// Run an engine with `rules_toml` over `batches` (each a list of (series, ts, value)) and
/// wait for it to commit everything.
async fn run_engine_with(spool: &Arc<Spool>, rules_toml: &str, batches: Vec<Vec<Reading>>) {
    run_engine_derived(spool, rules_toml, "", batches).await;
}

/// [`run_engine_with`], with the `[[derived]]` blocks of `derived_toml`.
async fn run_engine_derived(
    spool: &Arc<Spool>,
    rules_toml: &str,
    derived_toml: &str,
    batches: Vec<Vec<Reading>>,
) {
    #[derive(serde::Deserialize)]
    struct Section {
        #[serde(default)]
        derived: Vec<super::derived::DerivedConfig>,
    }
    let blocks: Section = toml::from_str(derived_toml).expect("derived parse");
    let plan = super::derived::DerivedPlan::from_config(&blocks.derived, "derived")
        .expect("derived valid");
    let cfg: AlertsConfig = toml::from_str(rules_toml).expect("rules parse");
    let (tx, rx) = mpsc::channel(16);
    let engine = Engine::new(
        rx,
        Arc::clone(spool),
        Arc::new(Metrics::new()),
        Arc::new(SystemClock),
        EngineConfig::default(),
        Duration::from_secs(3600),
        RuleSet::from_config(&cfg, "alerts").expect("rules valid"),
        "xa",
    )
    .with_derived(plan);
    let task = tokio::spawn(engine.run());
    for b in batches {
        tx.send(ReadingBatch::from(b)).await.expect("engine alive");
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("engine stops")
        .expect("no panic");
}

/// (point, ts, `value=` field, `quality=` field) of every stored settlement line (not the
/// alerts' points), sorted by point and time.
fn stored_points(spool: &Spool) -> Vec<(String, i64, String, String)> {
    let mut out = Vec::new();
    while let Some(batch) = spool
        .read_batch(Stream::Points, "reader", 1000)
        .expect("read")
    {
        for line in batch.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let line = String::from_utf8(line.to_vec()).expect("utf-8");
            let mut parts = line.rsplitn(3, ' ');
            let ts: i64 = parts.next().and_then(|t| t.parse().ok()).expect("ts");
            let fields = parts.next().expect("fields");
            let prefix = parts.next().expect("prefix");
            if !prefix.starts_with("settlement,") {
                continue;
            }
            let point = prefix
                .split(',')
                .find_map(|t| t.strip_prefix("point="))
                .expect("point tag")
                .to_owned();
            let field = |name: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(name))
                    .unwrap_or("-")
                    .to_owned()
            };
            out.push((point, ts, field("value="), field("quality=")));
        }
        spool.ack(Stream::Points, "reader", &batch).expect("ack");
    }
    out.sort();
    out
}

fn settlement_point(point: &str) -> Arc<Series> {
    Arc::new(Series::new(
        "xa",
        "gw",
        "lev-a1",
        point,
        QuantityKind::Settlement,
        "mm",
        &BTreeMap::new(),
    ))
}

#[tokio::test]
async fn readings_judged_by_a_sensor_check_are_stored_flagged_with_their_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    let s = settlement_point("ch1");
    let t0 = now_ns() - 600 * 1_000_000_000;
    let t = |i: i64| t0 + i * 1_000_000_000;
    // 10, 10.1, 30 (a jump: held), 10.2 (back: 30 was a spike), 250 (out of range),
    // 10.3, 10.3, 10.3 (the third completes the stuck run), 10.3 (still stuck), 10.4, 31
    // (a jump: held), 31.1 (it stayed: 31 was a real step).
    let values = [
        10.0, 10.1, 30.0, 10.2, 250.0, 10.3, 10.3, 10.3, 10.3, 10.4, 31.0, 31.1,
    ];
    // Each sample is read twice, as a Modbus poll faster than the device's sampling does: the
    // second read is a repeat, stored again only when the first was stored good.
    let batches = values
        .iter()
        .enumerate()
        .flat_map(|(i, &v)| {
            let r = Reading::good(Arc::clone(&s), t(i64::try_from(i).expect("small")), v);
            [vec![r.clone()], vec![r]]
        })
        .collect();
    run_engine_with(&spool, CHECKS, batches).await;
    let want: Vec<(String, i64, String, String)> = [
        (0, "10.0", "0i"),
        (1, "10.1", "0i"),
        (2, "30.0", "402i"),
        (3, "10.2", "0i"),
        (4, "250.0", "400i"),
        (5, "10.3", "0i"),
        (6, "10.3", "0i"),
        (7, "10.3", "401i"),
        (8, "10.3", "401i"),
        (9, "10.4", "0i"),
        (10, "31.0", "0i"),
        (11, "31.1", "0i"),
    ]
    .into_iter()
    .flat_map(|(i, v, q)| {
        let one = ("ch1".to_owned(), t(i), v.to_owned(), q.to_owned());
        // A good sample read again is stored again (the store keeps one: same series, time,
        // value and quality); a flagged or held one is not, so it never has two qualities.
        let times = if q == "0i" && i != 10 { 2 } else { 1 };
        std::iter::repeat_n(one, times)
    })
    .collect();
    assert_eq!(stored_points(&spool), want);
}

/// Readings a sensor check judged feed no derived channel; a jump held as a possible spike
/// and decided a real step does (issue 7: it is a good reading). Sums worked by hand.
#[tokio::test]
async fn a_held_jump_decided_a_real_step_feeds_the_derived_channels_and_a_spike_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    let s = settlement_point("ch1");
    let t0 = now_ns() - 600 * 1_000_000_000;
    let t = |i: i64| t0 + i * 1_000_000_000;
    // As above, each sample once: 30 a spike, 250 out of range, the third and fourth 10.3
    // stuck, 31 held and then decided a real step by 31.1.
    let values = [
        10.0, 10.1, 30.0, 10.2, 250.0, 10.3, 10.3, 10.3, 10.3, 10.4, 31.0, 31.1,
    ];
    let batches = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            vec![Reading::good(
                Arc::clone(&s),
                t(i64::try_from(i).expect("small")),
                v,
            )]
        })
        .collect();
    // The checks watch the device's channel only; the running sum is a channel of its own.
    let checks = CHECKS.replace(
        "select = { kind = \"settlement\" }",
        "select = { kind = \"settlement\", device = \"lev-a1\" }",
    );
    let derived = r#"
[[derived]]
name = "sum"
kind = "cumulative"
select = { device = "lev-a1" }
device = "sum"
"#;
    run_engine_derived(&spool, &checks, derived, batches).await;
    let sums: Vec<(i64, String)> = stored_points(&spool)
        .into_iter()
        .filter(|(point, ..)| point == "ch1.sum")
        .map(|(_, ts, v, q)| {
            assert_eq!(q, "0i", "a running sum of good readings is good");
            (ts, v)
        })
        .collect();
    // 10.0, +10.1, (30 spike: none), +10.2, (250: none), +10.3, +10.3, (stuck: none), +10.4,
    // +31.0 once decided, +31.1.
    let want: Vec<(i64, f64)> = [
        (0, 10.0),
        (1, 20.1),
        (3, 30.3),
        (5, 40.6),
        (6, 50.9),
        (9, 61.3),
        (10, 92.3),
        (11, 123.4),
    ]
    .into_iter()
    .map(|(i, v)| (t(i), v))
    .collect();
    assert_eq!(sums.len(), want.len(), "{sums:?}");
    for ((ts, got), (want_ts, want_v)) in sums.iter().zip(&want) {
        assert_eq!(ts, want_ts, "{sums:?}");
        let got: f64 = got.parse().expect("a number");
        assert!((got - want_v).abs() < 1e-9, "{got} != {want_v} in {sums:?}");
    }
}

#[tokio::test]
async fn a_held_jump_survives_a_restart_in_the_rule_state_and_is_stored_once_decided() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || spool_in(dir.path());
    let (ch1, ch2) = (settlement_point("ch1"), settlement_point("ch2"));
    let t0 = now_ns() - 600 * 1_000_000_000;
    let t = |i: i64| t0 + i * 1_000_000_000;
    let spool = open();
    // ch1 jumps to 40 in the last batch, beside a reading of ch2: the hold is committed with
    // that batch's points (the rule state), then the gateway stops.
    run_engine_with(
        &spool,
        CHECKS,
        vec![
            vec![Reading::good(Arc::clone(&ch1), t(0), 10.0)],
            vec![
                Reading::good(Arc::clone(&ch1), t(1), 40.0),
                Reading::good(Arc::clone(&ch2), t(1), 5.0),
            ],
        ],
    )
    .await;
    let before = stored_points(&spool);
    assert_eq!(
        before
            .iter()
            .map(|(p, ts, _, _)| (p.as_str(), *ts))
            .collect::<Vec<_>>(),
        vec![("ch1", t(0)), ("ch2", t(1))],
        "the held 40 is not stored before its verdict"
    );
    drop(spool);
    // After the restart ch1 reads 10.1: 40 came back, a spike, stored once with 402.
    let spool = open();
    run_engine_with(
        &spool,
        CHECKS,
        vec![vec![Reading::good(Arc::clone(&ch1), t(2), 10.1)]],
    )
    .await;
    assert_eq!(
        stored_points(&spool),
        vec![
            ("ch1".to_owned(), t(1), "40.0".to_owned(), "402i".to_owned()),
            ("ch1".to_owned(), t(2), "10.1".to_owned(), "0i".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_held_jump_alone_in_its_batch_is_durable_before_the_batch_is_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || spool_in(dir.path());
    let ch1 = settlement_point("ch1");
    let t0 = now_ns() - 600 * 1_000_000_000;
    let t = |i: i64| t0 + i * 1_000_000_000;
    let cfg: AlertsConfig = toml::from_str(CHECKS).expect("rules parse");
    let spool = open();
    let (tx, rx) = mpsc::channel(16);
    let engine = Engine::new(
        rx,
        Arc::clone(&spool),
        Arc::new(Metrics::new()),
        Arc::new(SystemClock),
        EngineConfig::default(),
        Duration::from_secs(3600),
        RuleSet::from_config(&cfg, "alerts").expect("rules valid"),
        "xa",
    );
    let task = tokio::spawn(engine.run());
    // Each batch as an MQTT source sends it: acknowledged upstream only once committed.
    for (ts, v) in [(t(0), 10.0), (t(1), 40.0)] {
        let (ack, committed) = tokio::sync::oneshot::channel();
        let batch = ReadingBatch {
            readings: vec![Reading::good(Arc::clone(&ch1), ts, v)],
            on_commit: Some(ack),
        };
        tx.send(batch).await.expect("engine alive");
        tokio::time::timeout(Duration::from_secs(5), committed)
            .await
            .expect("acknowledged")
            .expect("committed");
    }
    // The gateway dies right after the acknowledgement of the held 40: no final flush.
    task.abort();
    let _ = task.await;
    drop(tx);
    drop(spool);
    let spool = open();
    run_engine_with(
        &spool,
        CHECKS,
        vec![vec![Reading::good(Arc::clone(&ch1), t(2), 10.1)]],
    )
    .await;
    assert_eq!(
        stored_points(&spool),
        vec![
            ("ch1".to_owned(), t(0), "10.0".to_owned(), "0i".to_owned()),
            ("ch1".to_owned(), t(1), "40.0".to_owned(), "402i".to_owned()),
            ("ch1".to_owned(), t(2), "10.1".to_owned(), "0i".to_owned()),
        ],
        "the acknowledged 40 survived the crash in the rule state and was stored once decided"
    );
}

/// A system clock as a box without a battery has it: wall time the test sets (1970 at boot,
/// then stepped by "NTP"), monotonic time that only moves forward, synchronised by the real
/// rule (not earlier than the build).
#[derive(Debug)]
struct BootClock {
    wall: std::sync::atomic::AtomicI64,
    mono: std::sync::atomic::AtomicI64,
}

impl BootClock {
    /// At boot: the wall clock reads 1970 + 100 s, the monotonic clock 10 s.
    fn at_boot() -> Arc<Self> {
        const S: i64 = 1_000_000_000;
        Arc::new(Self {
            wall: std::sync::atomic::AtomicI64::new(100 * S),
            mono: std::sync::atomic::AtomicI64::new(10 * S),
        })
    }
}

impl crate::model::Clock for BootClock {
    fn now_ns(&self) -> i64 {
        self.wall.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn synchronised(&self, now: i64) -> bool {
        crate::clock::synchronised(now)
    }
    fn monotonic_ns(&self) -> i64 {
        self.mono.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn readings_stamped_before_the_clock_is_set_are_flagged_then_stamped_again() {
    use std::sync::atomic::Ordering;
    const S: i64 = 1_000_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    let clock = BootClock::at_boot();
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = mpsc::channel(16);
    let engine = engine_on(
        rx,
        &spool,
        &metrics,
        Arc::clone(&clock) as Arc<dyn crate::model::Clock>,
    );
    let task = tokio::spawn(engine.run());
    let plate = settlement_point("p1");
    // A poll stamped by the gateway at boot; a device reading with its own (right) time a day
    // after the build; a device reading in 1970 far from the gateway's clock: not the
    // gateway's stamp, and before the build by more than max_past (30 d): rejected.
    let device_ts = crate::clock::BUILD_FLOOR_NS + 86_400 * S;
    tx.send(ReadingBatch::from(vec![
        Reading::good(Arc::clone(&plate), 100 * S, 1.5),
        Reading::good(settlement_point("p2"), device_ts, 2.5),
        Reading::good(settlement_point("p3"), 5_000 * S, 3.5),
    ]))
    .await
    .expect("engine alive");
    // The engine takes each batch before the clock moves on.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // 20 s later (monotonic too), another poll.
    clock.wall.store(120 * S, Ordering::SeqCst);
    clock.mono.store(30 * S, Ordering::SeqCst);
    tx.send(ReadingBatch::from(vec![Reading::good(
        Arc::clone(&plate),
        120 * S,
        1.75,
    )]))
    .await
    .expect("engine alive");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // NTP sets the clock 10 s later: monotonic 40 s is the true time `synced`.
    let synced = crate::clock::BUILD_FLOOR_NS + 2 * 86_400 * S;
    clock.wall.store(synced, Ordering::SeqCst);
    clock.mono.store(40 * S, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A poll with the synchronised clock: stored good, as always.
    send_last_and_stop(tx, Reading::good(Arc::clone(&plate), synced, 2.0), task).await;

    let stored = stored_points(&spool);
    let p = |s: &str| s.to_owned();
    assert_eq!(
        stored,
        vec![
            // Stored at once as stamped, flagged 205: never good at a wrong time.
            (p("p1"), 100 * S, p("1.5"), p("205i")),
            (p("p1"), 120 * S, p("1.75"), p("205i")),
            // Stamped again from the monotonic clock: arrived 30 s and 10 s before the sync.
            (p("p1"), synced - 30 * S, p("1.5"), p("0i")),
            (p("p1"), synced - 10 * S, p("1.75"), p("0i")),
            (p("p1"), synced, p("2.0"), p("0i")),
            // The device's own time, not judged "future" against a clock known to be wrong.
            (p("p2"), device_ts, p("2.5"), p("0i")),
        ]
    );
    assert_eq!(metrics.total(Counter::ReadingsRestamped), 2);
    assert_eq!(metrics.total(Counter::ClockJumps), 1);
    assert_eq!(
        metrics.get(
            Counter::ReadingsRejected,
            &[("reason", "past"), ("device", "lev-a1")]
        ),
        1
    );
}

/// Send `reading` with a commit notice, wait for its commit, stop the engine as a reload does
/// and return what it hands over.
/// Send `reading` as the last batch, close the engine's input and wait for it to stop.
async fn send_last_and_stop(
    tx: mpsc::Sender<ReadingBatch>,
    reading: Reading,
    task: tokio::task::JoinHandle<()>,
) {
    tx.send(ReadingBatch::from(vec![reading]))
        .await
        .expect("engine alive");
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("engine stops")
        .expect("no panic");
}

async fn commit_then_stop(
    tx: &mpsc::Sender<ReadingBatch>,
    reading: Reading,
    stop: &tokio_util::sync::CancellationToken,
    engine: tokio::task::JoinHandle<crate::engine::EngineInputs>,
) -> crate::engine::EngineInputs {
    let (committed, notice) = tokio::sync::oneshot::channel();
    tx.send(ReadingBatch {
        readings: vec![reading],
        on_commit: Some(committed),
    })
    .await
    .expect("engine alive");
    tokio::time::timeout(Duration::from_secs(10), notice)
        .await
        .expect("committed in time")
        .expect("committed");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), engine)
        .await
        .expect("stops")
        .expect("no panic")
}

/// A reload while the clock is not yet synchronised: the copies the first engine held to stamp
/// again go to the next engine, which stamps them once the clock is set (issue 13 item 5: they
/// were lost with the engine).
#[tokio::test]
async fn readings_held_for_the_clock_survive_an_engine_stopped_for_a_reload() {
    use std::sync::atomic::Ordering;
    const S: i64 = 1_000_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    let clock = BootClock::at_boot();
    let metrics = Arc::new(Metrics::new());
    let engine = |rx| {
        engine_on(
            rx,
            &spool,
            &metrics,
            Arc::clone(&clock) as Arc<dyn crate::model::Clock>,
        )
    };
    let (tx, rx) = mpsc::channel(16);
    let stop = tokio_util::sync::CancellationToken::new();
    let first = tokio::spawn(engine(rx).run_until(stop.clone()));
    let plate = settlement_point("p1");
    // A poll the gateway stamped at boot (1970 + 100 s, monotonic 10 s).
    let inputs = commit_then_stop(
        &tx,
        Reading::good(Arc::clone(&plate), 100 * S, 1.5),
        &stop,
        first,
    )
    .await;
    // NTP sets the clock 30 s (monotonic) after the poll, while the next engine starts.
    let synced = crate::clock::BUILD_FLOOR_NS + 2 * 86_400 * S;
    clock.wall.store(synced, Ordering::SeqCst);
    clock.mono.store(40 * S, Ordering::SeqCst);
    let second = engine(inputs.rx).with_clock_held(inputs.clock_held);
    tx.send(ReadingBatch::from(vec![Reading::good(
        Arc::clone(&plate),
        synced,
        2.0,
    )]))
    .await
    .expect("the channel outlives the engine");
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), second.run())
        .await
        .expect("the second engine drains and stops");

    let p = |s: &str| s.to_owned();
    assert_eq!(
        stored_points(&spool),
        vec![
            (p("p1"), 100 * S, p("1.5"), p("205i")),
            // Stamped again by the second engine: it arrived 30 s before the sync.
            (p("p1"), synced - 30 * S, p("1.5"), p("0i")),
            (p("p1"), synced, p("2.0"), p("0i")),
        ]
    );
    assert_eq!(metrics.total(Counter::ReadingsRestamped), 1);
}

/// A config reload (`crate::run`): the engine stopped by its token commits what it received
/// with its rule state as it is now (not as of the last 10-s save), and hands over the channel
/// with the batch it had not taken; the next engine confirms the alert the first one started
/// counting, and every reading is stored once.
#[tokio::test]
async fn an_engine_stopped_for_a_reload_hands_over_its_channel_and_its_rule_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    let series = settlement_point("ch3");
    let t0 = now_ns() - 600 * 1_000_000_000;
    let engine = |rx| engine_on(rx, &spool, &Arc::new(Metrics::new()), Arc::new(SystemClock));
    let (tx, rx) = mpsc::channel(16);
    let stop = tokio_util::sync::CancellationToken::new();
    let first = tokio::spawn(engine(rx).run_until(stop.clone()));
    // 31 mm: the first of the two readings above 30 mm that confirm the raise (`RULES`).
    let inputs = commit_then_stop(
        &tx,
        Reading::good(Arc::clone(&series), t0, 31.0),
        &stop,
        first,
    )
    .await;
    // Sent while no engine runs: it waits in the channel for the next one.
    tx.send(ReadingBatch::from(vec![Reading::good(
        Arc::clone(&series),
        t0 + 1_000_000_000,
        32.0,
    )]))
    .await
    .expect("the channel outlives the engine");
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), engine(inputs.rx).run())
        .await
        .expect("the second engine drains and stops");

    let raised: Vec<_> = alerts(&spool)
        .into_iter()
        .filter(|a| a.state == AlertState::Raised)
        .collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    let stored = stored_points(&spool);
    assert_eq!(
        stored
            .iter()
            .map(|(p, ts, v, _)| (p.as_str(), *ts, v.as_str()))
            .collect::<Vec<_>>(),
        [("ch3", t0, "31.0"), ("ch3", t0 + 1_000_000_000, "32.0")]
    );
}

/// The gateway's layout (docs/ARCHITECTURE.md §Spool layout, Two files): alert events and the
/// rule state go to the alerts file, the points (with the alerts' `alerts` points) to the points
/// file, and a restart takes the rule state from the alerts file: the active alert is not
/// raised again and still clears.
#[tokio::test]
async fn alerts_and_rule_state_go_to_the_alerts_file_and_a_restart_takes_them_from_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |name: &str| {
        Arc::new(
            Spool::open(
                &dir.path().join(name),
                &SpoolConfig::default(),
                &["reader".to_owned()],
            )
            .expect("spool"),
        )
    };
    let series = settlement_point("ch5");
    let t0 = now_ns() - 600 * 1_000_000_000;
    let (points, alerts_file) = (open("spool.redb"), open("alerts.redb"));
    run_engine_split(&points, &alerts_file, &series, t0, &[12.0, 31.0, 32.0]).await;
    let raised = alerts(&alerts_file);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].state, AlertState::Raised);
    assert!(
        alerts(&points).is_empty(),
        "no alert event in the points file"
    );
    assert!(
        points.load_state().expect("state").is_empty(),
        "no state there"
    );
    assert!(
        alerts_file
            .load_state()
            .expect("state")
            .iter()
            .any(|(k, _)| k.starts_with("c/")),
        "the channel's rule state is in the alerts file"
    );
    drop((points, alerts_file));

    let (points, alerts_file) = (open("spool.redb"), open("alerts.redb"));
    run_engine_split(
        &points,
        &alerts_file,
        &series,
        t0 + 10_000_000_000,
        &[33.0, 34.0, 15.0, 14.0],
    )
    .await;
    let after = alerts(&alerts_file);
    assert_eq!(
        after.iter().map(|a| a.state).collect::<Vec<_>>(),
        vec![AlertState::Cleared],
        "{after:?}"
    );
    assert_eq!(after[0].id, raised[0].id);
    let lines = point_lines(&points);
    let count = |m: &str| lines.iter().filter(|l| l.starts_with(m)).count();
    assert_eq!(
        (count("settlement,"), count("alerts,"), lines.len()),
        (7, 2, 9),
        "both runs' readings and one `alerts` point per event, nothing else: {lines:?}"
    );
}

/// A poll whose two settlement cells reach the engine in separate batches (a node sending each
/// sensor in a message of its own): their difference is computed once, from the poll's own
/// readings, not first from the other cell's reading of the poll before. A cell whose partner
/// never comes has its difference computed from what there is once the wait is over, on the
/// engine's tick while it runs, and at once when it stops.
#[tokio::test]
async fn a_difference_waits_for_the_partner_of_its_poll_and_not_for_ever() {
    #[derive(serde::Deserialize)]
    struct Section {
        derived: Vec<super::derived::DerivedConfig>,
    }
    let blocks: Section = toml::from_str(
        r#"
[[derived]]
name = "diff"
kind = "difference"
pairs = [{ a = "lev-a1/ch1", b = "lev-a1/ch2" }]
"#,
    )
    .expect("derived parse");
    let plan = super::derived::DerivedPlan::from_config(&blocks.derived, "derived")
        .expect("derived valid");
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    let (tx, rx) = mpsc::channel(16);
    let metrics = Arc::new(Metrics::new());
    let engine = engine_on(rx, &spool, &metrics, Arc::new(SystemClock)).with_derived(plan);
    let task = tokio::spawn(engine.run());
    let (a, b) = (settlement_point("ch1"), settlement_point("ch2"));
    // Polls 1 min apart, well within the 10 min max_skew.
    let t0 = now_ns() - 600 * 1_000_000_000;
    let t = |i: i64| t0 + i * 60 * 1_000_000_000;
    for batch in [
        vec![
            Reading::good(Arc::clone(&a), t(0), 10.0),
            Reading::good(Arc::clone(&b), t(0), 4.0),
        ],
        vec![Reading::good(Arc::clone(&a), t(1), 11.0)],
        vec![Reading::good(Arc::clone(&b), t(1), 4.5)],
        // ch2 stops reporting.
        vec![Reading::good(Arc::clone(&a), t(2), 12.0)],
    ] {
        tx.send(ReadingBatch::from(batch))
            .await
            .expect("engine alive");
    }
    let diffs = |points: &[(String, i64, String, String)]| -> Vec<(i64, f64)> {
        points
            .iter()
            .filter(|(p, ..)| p == "ch1-ch2.diff")
            .map(|(_, ts, v, q)| {
                assert_eq!(q, "0i");
                (*ts, v.parse().expect("a number"))
            })
            .collect()
    };
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !seen.iter().any(|(ts, _)| *ts == t(2)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the difference at t2 was never computed while the engine ran: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen.extend(diffs(&stored_points(&spool)));
    }
    // Stopping computes what still waits.
    send_last_and_stop(tx, Reading::good(Arc::clone(&a), t(3), 13.0), task).await;
    seen.extend(diffs(&stored_points(&spool)));
    seen.sort_by_key(|(ts, _)| *ts);
    let want = [
        (t(0), 6.0),
        (t(1), 6.5),
        (t(2), 12.0 - 4.5),
        (t(3), 13.0 - 4.5),
    ];
    assert_eq!(seen.len(), want.len(), "once per poll: {seen:?}");
    for ((ts, v), (want_ts, want_v)) in seen.iter().zip(&want) {
        assert_eq!(ts, want_ts, "{seen:?}");
        assert!((v - want_v).abs() < 1e-9, "{v} != {want_v}: {seen:?}");
    }
}
