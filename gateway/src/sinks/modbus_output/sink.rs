//! The Modbus output sink task: reads the alerts stream, keeps the set of alerts that hold the
//! output ([`Holds`]) and writes the wanted state through the poller of the device's bus.
//!
//! Owns the loop, the re-assertion timer, backoff after a failed write and its counters. It does
//! not own the wire (the poller sends the write, [`crate::sources::modbus::write`]) nor which
//! alerts hold the output ([`super::config::AlertFilter`]).
//!
//! - Start: the set is seeded from the rule state the engine saved in the spool (its active
//!   alerts with their latest events, restored as the engine restores them), then the events
//!   after the sink's cursor are applied on top; the first write goes out at once, so an output
//!   left on by a run whose alerts cleared while the gateway was down is released.
//! - A batch: every event is applied, the cursor advances, and the state is written when it
//!   differs from the last one the device confirmed.
//! - Every `reassert_interval` the state is written again (a relay module that lost power comes
//!   back with its coils off).
//! - A failed write (exception, timeout: the poller logs it naming device and address and counts
//!   it) is counted here too (`modbus_output_failures_total`) and retried after the shared
//!   backoff ([`crate::retry`]), between `retry_initial` and `retry_max`.
//! - Shutdown leaves the output as it is; the next start writes the wanted state again.

use std::sync::Arc;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::config::ResolvedModbusOutput;
use super::holds::Holds;
use crate::alert::Alert;
use crate::engine::rules::{Evaluator, RuleSet};
use crate::metrics::{Counter, Metrics};
use crate::model::now_ns;
use crate::retry::Backoff;
use crate::sinks::{parse_alert_lines, BatchReader, Next};
use crate::sources::modbus::write::BusWriters;
use crate::spool::{Spool, Stream};

/// Alert events read from the spool at once.
pub const BATCH_MAX_RECORDS: u64 = 50;

/// The rules and site the engine's saved state belongs to, to restore it the way the engine does.
#[derive(Debug, Clone)]
pub struct SavedRules {
    /// The configured rules.
    pub rules: RuleSet,
    /// The site name.
    pub site: String,
}

/// A Modbus output sink, ready to run.
#[derive(Debug)]
pub struct ModbusOutputSink {
    cfg: ResolvedModbusOutput,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    writers: BusWriters,
    saved: Option<SavedRules>,
}

impl ModbusOutputSink {
    /// A sink for `cfg` reading `spool`, writing through `writers`; `saved` restores the active
    /// alerts from the engine's saved rule state at start (`None`: start from the stream alone).
    #[must_use]
    pub const fn new(
        cfg: ResolvedModbusOutput,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
        writers: BusWriters,
        saved: Option<SavedRules>,
    ) -> Self {
        Self {
            cfg,
            spool,
            metrics,
            writers,
            saved,
        }
    }

    /// The active alerts of the engine's saved rule state; none when there is no state or it
    /// cannot be read (logged: then only alerts with an event after the cursor are known).
    async fn restored_alerts(&self) -> Vec<Alert> {
        let Some(saved) = self.saved.clone() else {
            return Vec::new();
        };
        let spool = Arc::clone(&self.spool);
        let restored = crate::supervise::spawn_blocking(move || {
            let entries = spool.load_state().map_err(|e| e.to_string())?;
            if entries.is_empty() {
                return Ok(Vec::new());
            }
            Evaluator::restore_entries(saved.rules, &saved.site, entries, now_ns())
                .map(|(ev, _)| ev.active_alerts().cloned().collect())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        restored.unwrap_or_else(|e| {
            error!(sink = %self.cfg.name, error = %e,
                   "Cannot read the saved active alerts; the output follows the alerts with an event from now on.");
            Vec::new()
        })
    }

    /// Run until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let cfg = &self.cfg;
        let mut holds = Holds::new(cfg.filter.clone());
        for alert in self.restored_alerts().await {
            holds.apply(&alert);
        }
        info!(sink = %cfg.name, device = %cfg.device, output = %cfg.output.write(true),
              held_by = ?holds.holders(), "Modbus output sink started.");
        let reader = BatchReader::new(
            Arc::clone(&self.spool),
            Stream::Alerts,
            &cfg.name,
            BATCH_MAX_RECORDS,
            std::time::Duration::ZERO,
        );
        let mut spool_backoff = Backoff::new(cfg.retry_initial, cfg.retry_max);
        let mut write_backoff = Backoff::new(cfg.retry_initial, cfg.retry_max);
        // What the device last confirmed; `None` before the first write and after a failure.
        let mut confirmed: Option<bool> = None;
        let mut due = Instant::now();
        loop {
            match reader
                .next(0, &shutdown, &mut spool_backoff, sleep_until(due))
                .await
            {
                Next::Shutdown => break,
                Next::Interrupted(()) => {}
                Next::Batch(batch) => {
                    let mut bad = Vec::new();
                    for line in parse_alert_lines(&batch.body) {
                        match line {
                            Ok(alert) => holds.apply(&alert),
                            Err(e) => bad.push(e),
                        }
                    }
                    let reason = (!bad.is_empty()).then(|| bad.join("; "));
                    if let Some(r) = &reason {
                        error!(sink = %cfg.name, reason = %r,
                               "Alert lines that cannot be read; the batch goes to the dead letters (its other events were taken).");
                    }
                    if !reader
                        .settle_or_wait(&batch, reason, &shutdown, &mut spool_backoff)
                        .await
                    {
                        continue;
                    }
                    spool_backoff.reset();
                    self.metrics.add(
                        Counter::ModbusOutputAlerts,
                        &[("sink", &cfg.name)],
                        batch.records,
                    );
                    if confirmed == Some(holds.wanted()) {
                        continue;
                    }
                }
            }
            let wanted = holds.wanted();
            let written = tokio::select! {
                () = shutdown.cancelled() => break,
                r = self.writers.write(&cfg.device, cfg.output.write(wanted)) => r,
            };
            let state = if wanted { "on" } else { "off" };
            match written {
                Ok(()) => {
                    if confirmed != Some(wanted) {
                        info!(sink = %cfg.name, device = %cfg.device, output = %cfg.output.write(wanted),
                              held_by = ?holds.holders(), "Modbus output set {state}.");
                    }
                    self.metrics.incr(
                        Counter::ModbusOutputWrites,
                        &[("sink", &cfg.name), ("state", state)],
                    );
                    confirmed = Some(wanted);
                    write_backoff.reset();
                    due = Instant::now() + cfg.reassert_interval;
                }
                Err(e) => {
                    let delay = write_backoff.next_delay();
                    self.metrics
                        .incr(Counter::ModbusOutputFailures, &[("sink", &cfg.name)]);
                    warn!(sink = %cfg.name, device = %cfg.device, address = cfg.output.address(),
                          error = %e, retry_in = ?delay, "Cannot set the Modbus output {state}; retrying.");
                    confirmed = None;
                    due = Instant::now() + delay;
                }
            }
        }
    }
}
