//! The MQTT upstream alert sink task: reads batches of the alerts stream, publishes each alert
//! event with QoS 1 and the retained per-site summary of active alerts, and moves its spool
//! cursor only once the broker has sent a PUBACK (MQTT 3.1.1 §4.3.2) for **every** message of
//! the batch.
//!
//! Owns the connection (one rumqttc client and event loop per connection), the PubAck
//! accounting, the summary of active alerts ([`ActiveAlerts`]), backoff and its counters. It
//! does not own the alerts or their JSON (see [`crate::alert`]).
//!
//! # Why a fresh client per connection
//! rumqttc reconnects by itself, but when the broker answers CONNACK with `session_present =
//! false` it clears its pending queue, dropping unacknowledged QoS 1 publishes without an error
//! (docs/ARCHITECTURE.md §Crate pitfalls, rumqttc; bytebeamio/rumqtt#250). This sink therefore
//! never lets rumqttc reconnect: on any connection error it drops the client and event loop, backs
//! off, builds new ones (clean session) and re-publishes every message of the current batch that
//! has no PubAck yet. Because every connection starts from an empty rumqttc state, the `n`-th
//! `Outgoing::Publish(pkid)` event belongs to the `n`-th publish this sink queued, which is how a
//! PubAck's packet id is mapped back to a message.
//!
//! # Delivery guarantee
//! At least once. A message whose PUBACK was lost with the connection is published again; the
//! alert's `(id, seq)` lets receivers de-duplicate (see [`crate::alert`]). A line of the stream
//! that is not an alert cannot be published: the rest of the batch is, and then the batch goes to
//! the spool's dead letters with a reason naming the bad lines.
//!
//! # The retained summary after a restart
//! [`ActiveAlerts`] lives in memory. On its first connection the sink reads the broker's retained
//! summaries back ([`SEED_WAIT`]) and starts from them, so alerts still active from before a
//! restart stay listed. Without a retained copy (a broker that lost it) it starts empty, so the
//! first summary published for a site lists only the
//! alerts with an event since the restart; an alert that stays active without a new event is
//! missing from the summary until its next event (its clear removes it anyway). Nothing extra is
//! persisted.

use crate::metrics::Counter;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::config::{ResolvedMqtt, SITE_PLACEHOLDER};
use crate::alert::Alert;
use crate::metrics::Metrics;
use crate::retry::{sleep_or_shutdown, Backoff};
use crate::sinks::{parse_alert_lines, BatchReader, Next};
use crate::spool::{truncate_utf8, Batch, Spool, Stream, MAX_REASON_BYTES};

/// Counter: alert events the broker acknowledged (PUBACK).
pub const PUBLISHED_RECORDS: Counter = Counter::MqttAlertsPublished;
/// Counter: retained summaries the broker acknowledged.
pub const SUMMARIES_PUBLISHED: Counter = Counter::MqttAlertsSummariesPublished;
/// Counter: connections that failed or were lost (each is followed by a backoff).
pub const CONNECTION_FAILURES: Counter = Counter::MqttAlertsConnectionFailures;
/// Counter: stream lines that were not alerts (their batch went to the dead letters).
pub const REJECTED_RECORDS: Counter = Counter::MqttAlertsRejected;

/// Largest MQTT packet this client sends or accepts. rumqttc's default is 10 KiB, which a
/// summary of about 15 active alerts (≈ 700 B each) would exceed; 1 MiB holds well over a
/// thousand, and mosquitto's default `message_size_limit` is far above it.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;
/// Events buffered between the event-loop task and the sink: a batch's `Publish` and `PubAck`
/// events at most, plus pings; the event loop waits when it is full, it never drops.
const LINK_EVENTS: usize = 4 * super::config::MAX_BATCH_MAX_RECORDS as usize;
/// Longest wait for CONNACK after the TCP connect (rumqttc's own connect timeout is 5 s).
const CONNACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the sink waits for the broker's retained summaries when it starts (they arrive
/// right after the SUBSCRIBE on a working broker, within milliseconds on a LAN).
pub const SEED_WAIT: Duration = Duration::from_millis(500);

/// The active alerts, per site, keyed by alert id: the latest event of every alert that is raised
/// and not yet cleared. Rebuilt from delivered events only (see the module doc for restarts).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActiveAlerts {
    by_site: BTreeMap<String, BTreeMap<String, Alert>>,
}

impl ActiveAlerts {
    /// Apply one event: raised, escalated and de-escalated replace the alert's entry; cleared
    /// removes it.
    pub fn apply(&mut self, a: &Alert) {
        if a.is_active() {
            self.by_site
                .entry(a.site.clone())
                .or_default()
                .insert(a.id.clone(), a.clone());
        } else if let Some(site) = self.by_site.get_mut(&a.site) {
            site.remove(&a.id);
            if site.is_empty() {
                self.by_site.remove(&a.site);
            }
        }
    }

    /// The active alerts of `site`, oldest raise first (ties by id).
    #[must_use]
    pub fn site(&self, site: &str) -> Vec<&Alert> {
        let mut v: Vec<&Alert> = self
            .by_site
            .get(site)
            .map(|m| m.values().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        v
    }

    /// The summary payload of `site`: a JSON array of its active alerts (`[]` when none).
    ///
    /// # Errors
    /// Only if an alert cannot be serialised, which serde_json does not do for [`Alert`].
    pub fn site_json(&self, site: &str) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&self.site(site))
    }
}

/// The topic for `site` from a validated template: `{site}` is replaced by the site name with
/// `/`, `+`, `#` and NUL turned into `_`, so a site name can neither add topic levels nor make
/// the name a filter (MQTT 3.1.1 §4.7).
#[must_use]
pub fn render_topic(template: &str, site: &str) -> String {
    let safe: String = site
        .chars()
        .map(|c| {
            if matches!(c, '/' | '+' | '#' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    template.replace(SITE_PLACEHOLDER, &safe)
}

/// Why the sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MqttSinkError {
    /// The sink's name is not a cursor in the spool.
    #[error("sink {sink}: not registered in the spool {}; pass its name to Spool::open", path.display())]
    NotRegistered {
        /// The sink name.
        sink: String,
        /// The spool file.
        path: std::path::PathBuf,
    },
}

/// One MQTT message of a batch.
#[derive(Debug, Clone)]
struct Message {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// A batch being delivered: its messages, which ones the broker acknowledged, and the summary
/// state that becomes current once the batch is settled.
#[derive(Debug)]
struct Work {
    batch: Batch,
    messages: Vec<Message>,
    acked: Vec<bool>,
    alerts: u64,
    summaries: u64,
    next_active: ActiveAlerts,
    /// Lines that were not alerts; non-empty → dead letter instead of ack.
    bad: Vec<String>,
}

/// What the event-loop task reports.
#[derive(Debug)]
enum LinkEvent {
    /// CONNACK received.
    Connected,
    /// A QoS 1 PUBLISH left with this packet id.
    Sent(u16),
    /// PUBACK for this packet id.
    Acked(u16),
    /// A PUBLISH came in: only the retained summaries this sink subscribes to at start.
    Summary(Vec<u8>),
    /// The connection failed; the task has ended.
    Lost(String),
}

/// One connection: a client, the task polling its event loop, and that task's reports.
#[derive(Debug)]
struct Link {
    client: AsyncClient,
    events: mpsc::Receiver<LinkEvent>,
    task: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Dropping the event loop closes the socket; nothing of it may outlive this connection.
        self.task.abort();
    }
}

/// How waiting or delivering ended.
enum Step<T> {
    Done(T),
    Lost(String),
    Shutdown,
}

/// The MQTT upstream alert sink. Build with [`MqttSink::new`], then spawn [`MqttSink::run`].
#[derive(Debug)]
pub struct MqttSink {
    cfg: ResolvedMqtt,
    reader: BatchReader,
    metrics: Arc<Metrics>,
}

impl MqttSink {
    /// Check the sink is registered in the spool.
    ///
    /// # Errors
    /// [`MqttSinkError::NotRegistered`].
    pub fn new(
        cfg: ResolvedMqtt,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, MqttSinkError> {
        if !spool.is_registered(&cfg.name) {
            return Err(MqttSinkError::NotRegistered {
                sink: cfg.name,
                path: spool.path().to_path_buf(),
            });
        }
        // Alerts are published as soon as they are committed: no batching delay.
        let reader = BatchReader::new(
            spool,
            Stream::Alerts,
            &cfg.name,
            u64::from(cfg.batch_max_records),
            Duration::ZERO,
        );
        Ok(Self {
            cfg,
            reader,
            metrics,
        })
    }

    /// The sink's name (spool cursor, metric label).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Deliver alerts until `shutdown` is cancelled. A batch not fully acknowledged at shutdown
    /// stays in the spool and is published again after restart.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(sink = %self.cfg.name, host = %self.cfg.host, port = self.cfg.port,
              topic = %self.cfg.topic, "mqtt alert sink started");
        let mut backoff = Backoff::new(self.cfg.retry_initial, self.cfg.retry_max);
        // Reconnects have their own, lower ceiling, reset only after a connection stayed up
        // (docs/ARCHITECTURE.md §Crate pitfalls, rumqttc).
        let mut reconnect = Backoff::new(self.cfg.retry_initial, self.cfg.max_reconnect_backoff)
            .with_healthy_after(crate::sources::mqtt::subscriber::HEALTHY_CONNECTION);
        let mut active = ActiveAlerts::default();
        // The summary is seeded once, from the broker's retained copy, on the first connection.
        let mut seeded = false;
        let mut work: Option<Work> = None;
        let labels = [("sink", self.cfg.name.as_str())];
        'connection: loop {
            let mut link = match self.connect(&shutdown).await {
                Step::Done(link) => link,
                Step::Shutdown => break,
                Step::Lost(e) => {
                    let delay = reconnect.failed_at(std::time::Instant::now());
                    self.metrics.incr(CONNECTION_FAILURES, &labels);
                    warn!(sink = %self.cfg.name, error = %e, retry_in = ?delay, "cannot connect to the broker");
                    if sleep_or_shutdown(delay, &shutdown).await {
                        continue;
                    }
                    break;
                }
            };
            info!(sink = %self.cfg.name, "connected to the broker");
            reconnect.connected_at(std::time::Instant::now());
            if !seeded {
                seeded = true;
                self.seed_summary(&mut link, &mut active, &shutdown).await;
            }
            let lost = loop {
                if work.is_none() {
                    match self.next_work(&mut link, &active, &shutdown).await {
                        Step::Done(w) => work = Some(w),
                        Step::Lost(e) => break e,
                        Step::Shutdown => break 'connection,
                    }
                }
                let Some(w) = work.as_mut() else { continue };
                match self.deliver(&mut link, w, &shutdown).await {
                    Step::Done(()) => {}
                    Step::Lost(e) => break e,
                    Step::Shutdown => break 'connection,
                }
                backoff.reset();
                let Some(w) = work.take() else { continue };
                if !self.settle(w, &mut active, &shutdown, &mut backoff).await {
                    break 'connection;
                }
            };
            drop(link);
            let delay = reconnect.failed_at(std::time::Instant::now());
            self.metrics.incr(CONNECTION_FAILURES, &labels);
            let unacked = work
                .as_ref()
                .map_or(0, |w| w.acked.iter().filter(|a| !**a).count());
            warn!(sink = %self.cfg.name, error = %lost, unacked, retry_in = ?delay,
                  "connection to the broker lost; unacknowledged messages will be published again");
            if !sleep_or_shutdown(delay, &shutdown).await {
                break;
            }
        }
        info!(sink = %self.cfg.name, "mqtt alert sink stopped");
    }

    fn options(&self) -> MqttOptions {
        let mut o = MqttOptions::new(&self.cfg.client_id, &self.cfg.host, self.cfg.port);
        // Clean session: the sink re-sends from the spool itself, and a fresh session makes the
        // broker's and rumqttc's state predictable (module doc).
        o.set_clean_session(true);
        o.set_keep_alive(self.cfg.keep_alive);
        o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        // A batch is published at once: its alerts plus at most one summary per site, so twice
        // the batch size bounds both the request queue and the in-flight window.
        let window = 2 * self.cfg.batch_max_records as usize + 2;
        o.set_request_channel_capacity(window);
        o.set_inflight(u16::try_from(window).unwrap_or(u16::MAX));
        if let Some((user, pass)) = &self.cfg.credentials {
            o.set_credentials(user.clone(), pass.expose().to_owned());
        }
        if let Some(tls) = &self.cfg.tls {
            o.set_transport(tls.mqtt_transport());
        }
        o
    }

    /// Start the summary of active alerts from the broker's retained summaries, so that alerts
    /// raised before a gateway restart, and still active, stay in the summary although no new
    /// event of theirs passes through this sink. Best effort: waits at most [`SEED_WAIT`]; a
    /// broker that lost its retained messages leaves the summary to be rebuilt from new events.
    async fn seed_summary(
        &self,
        link: &mut Link,
        active: &mut ActiveAlerts,
        shutdown: &CancellationToken,
    ) {
        let filter = self.cfg.summary_topic.replace(SITE_PLACEHOLDER, "+");
        if link
            .client
            .subscribe(filter.clone(), QoS::AtMostOnce)
            .await
            .is_err()
        {
            return;
        }
        let deadline = Instant::now() + SEED_WAIT;
        let mut seeded = 0usize;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(deadline) => break,
                ev = link.events.recv() => match ev {
                    Some(LinkEvent::Summary(payload)) => {
                        match serde_json::from_slice::<Vec<Alert>>(&payload) {
                            Ok(alerts) => {
                                for a in alerts.iter().filter(|a| a.is_active()) {
                                    active.apply(a);
                                    seeded += 1;
                                }
                            }
                            Err(e) => warn!(sink = %self.cfg.name, error = %e, "a retained alert summary is not valid JSON; ignored"),
                        }
                    }
                    Some(LinkEvent::Lost(_)) | None => break,
                    Some(_) => {}
                },
            }
        }
        // Our own summaries must not come back to us while delivering.
        let _ = link.client.unsubscribe(filter).await;
        if seeded > 0 {
            info!(sink = %self.cfg.name, active = seeded, "alert summary seeded from the broker's retained copy");
        }
    }

    /// Open a new connection and wait for its CONNACK.
    async fn connect(&self, shutdown: &CancellationToken) -> Step<Link> {
        let opts = self.options();
        let cap = opts.request_channel_capacity();
        let (client, mut eventloop) = AsyncClient::new(opts, cap);
        let (tx, events) = mpsc::channel(LINK_EVENTS);
        let task = tokio::spawn(async move {
            loop {
                let report = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => LinkEvent::Connected,
                    Ok(Event::Incoming(Packet::PubAck(p))) => LinkEvent::Acked(p.pkid),
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LinkEvent::Sent(pkid),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        LinkEvent::Summary(p.payload.to_vec())
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        // Not polled again: rumqttc would reconnect and might drop publishes.
                        let _ = tx.send(LinkEvent::Lost(e.to_string())).await;
                        return;
                    }
                };
                if tx.send(report).await.is_err() {
                    return;
                }
            }
        });
        let mut link = Link {
            client,
            events,
            task,
        };
        let deadline = Instant::now() + CONNACK_TIMEOUT;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Step::Shutdown,
                () = tokio::time::sleep_until(deadline) => {
                    return Step::Lost(format!("no CONNACK within {CONNACK_TIMEOUT:?}"));
                }
                ev = link.events.recv() => match ev {
                    Some(LinkEvent::Connected) => return Step::Done(link),
                    Some(LinkEvent::Lost(e)) => return Step::Lost(e),
                    Some(_) => {}
                    None => return Step::Lost("event loop ended".into()),
                },
            }
        }
    }

    /// Wait for the next batch of the alerts stream while watching the connection.
    async fn next_work(
        &self,
        link: &mut Link,
        active: &ActiveAlerts,
        shutdown: &CancellationToken,
    ) -> Step<Work> {
        // A storage error is retried here: the connection is fine, so it is not dropped.
        let mut backoff = Backoff::new(self.cfg.retry_initial, self.cfg.retry_max);
        let events = &mut link.events;
        let lost = async move {
            loop {
                match events.recv().await {
                    Some(LinkEvent::Lost(e)) => return e,
                    None => return "event loop ended".to_owned(),
                    Some(_) => {}
                }
            }
        };
        match self.reader.next(0, shutdown, &mut backoff, lost).await {
            Next::Batch(batch) => Step::Done(self.build(batch, active)),
            Next::Shutdown => Step::Shutdown,
            Next::Interrupted(e) => Step::Lost(e),
        }
    }

    /// Turn a batch into messages: every alert event on its site topic, then one retained
    /// summary for every site the batch touched.
    fn build(&self, batch: Batch, active: &ActiveAlerts) -> Work {
        let mut next_active = active.clone();
        let mut messages = Vec::new();
        let mut bad = Vec::new();
        let mut sites = BTreeSet::new();
        for line in parse_alert_lines(&batch.body) {
            let alert = match line {
                Ok(a) => a,
                Err(e) => {
                    bad.push(e);
                    continue;
                }
            };
            match serde_json::to_vec(&alert) {
                Ok(payload) => messages.push(Message {
                    topic: render_topic(&self.cfg.topic, &alert.site),
                    payload,
                    retain: false,
                }),
                Err(e) => {
                    bad.push(format!("alert {} cannot be serialised: {e}", alert.id));
                    continue;
                }
            }
            next_active.apply(&alert);
            sites.insert(alert.site);
        }
        let alerts = messages.len() as u64;
        for site in sites {
            match next_active.site_json(&site) {
                Ok(payload) => messages.push(Message {
                    topic: render_topic(&self.cfg.summary_topic, &site),
                    payload,
                    // Retained (MQTT 3.1.1 §3.3.1.3): a dashboard that subscribes later gets the
                    // current picture at once.
                    retain: true,
                }),
                Err(e) => bad.push(format!("summary of site {site} cannot be serialised: {e}")),
            }
        }
        let summaries = messages.len() as u64 - alerts;
        Work {
            acked: vec![false; messages.len()],
            batch,
            messages,
            alerts,
            summaries,
            next_active,
            bad,
        }
    }

    /// Publish every message of `work` without a PubAck yet, and wait until all have one.
    async fn deliver(
        &self,
        link: &mut Link,
        work: &mut Work,
        shutdown: &CancellationToken,
    ) -> Step<()> {
        // Index of each queued message, in queue order; the n-th `Sent` is the n-th queued.
        let mut queued: VecDeque<usize> = VecDeque::new();
        let mut by_pkid: HashMap<u16, usize> = HashMap::new();
        for (i, m) in work.messages.iter().enumerate() {
            if work.acked[i] {
                continue;
            }
            if let Err(e) = link.client.try_publish(
                m.topic.as_str(),
                QoS::AtLeastOnce,
                m.retain,
                m.payload.clone(),
            ) {
                return Step::Lost(format!("cannot queue a publish: {e}"));
            }
            queued.push_back(i);
        }
        let deadline = Instant::now() + self.cfg.ack_timeout;
        while work.acked.iter().any(|a| !*a) {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Step::Shutdown,
                () = tokio::time::sleep_until(deadline) => {
                    let missing = work.acked.iter().filter(|a| !**a).count();
                    return Step::Lost(format!(
                        "{missing} PubAck(s) missing after {:?}", self.cfg.ack_timeout
                    ));
                }
                ev = link.events.recv() => match ev {
                    Some(LinkEvent::Sent(pkid)) => {
                        if let Some(i) = queued.pop_front() {
                            by_pkid.insert(pkid, i);
                        }
                    }
                    Some(LinkEvent::Acked(pkid)) => {
                        if let Some(i) = by_pkid.remove(&pkid) {
                            work.acked[i] = true;
                        }
                    }
                    Some(LinkEvent::Connected | LinkEvent::Summary(_)) => {}
                    Some(LinkEvent::Lost(e)) => return Step::Lost(e),
                    None => return Step::Lost("event loop ended".into()),
                },
            }
        }
        Step::Done(())
    }

    /// Every message is acknowledged: move the cursor (or dead-letter the batch if some lines
    /// were not alerts) and make the new summary current. False when shut down.
    async fn settle(
        &self,
        work: Work,
        active: &mut ActiveAlerts,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> bool {
        let labels = [("sink", self.cfg.name.as_str())];
        let reason = if work.bad.is_empty() {
            None
        } else {
            let text = format!(
                "{} line(s) are not alerts (the others were published): {}",
                work.bad.len(),
                work.bad.join("; ")
            );
            error!(sink = %self.cfg.name, first_seq = work.batch.first_seq, last_seq = work.batch.last_seq,
                   reason = %text, "alerts batch has bad lines; it is kept in the spool's dead letters");
            Some(truncate_utf8(&text, MAX_REASON_BYTES).to_owned())
        };
        let dead = reason.is_some();
        // On a spool error the batch stays at the cursor and is published again (at least
        // once); the summary is recomputed from the same events, so it comes out the same.
        if !self
            .reader
            .settle_or_wait(&work.batch, reason, shutdown, backoff)
            .await
        {
            return !shutdown.is_cancelled();
        }
        self.metrics.add(PUBLISHED_RECORDS, &labels, work.alerts);
        self.metrics
            .add(SUMMARIES_PUBLISHED, &labels, work.summaries);
        if dead {
            self.metrics
                .add(REJECTED_RECORDS, &labels, work.bad.len() as u64);
        }
        *active = work.next_active;
        true
    }
}
