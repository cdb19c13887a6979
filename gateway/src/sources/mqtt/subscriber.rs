//! The MQTT subscriber task: connect, (re)subscribe, decode, batch, send to the engine.
//!
//! Owns [`MqttSource`] (the connection loop) and the ingest state behind it: the series cache,
//! the CIGEM fault state per (device, point), per-subscription counters and rate-limited
//! warnings. It does not parse payloads ([`super::payload`], [`super::cigem`]) or check
//! timestamps against the clock (the engine does).
//!
//! rumqttc pitfalls handled here (docs/ARCHITECTURE.md §Crate pitfalls, rumqttc):
//! - it does not re-subscribe after a reconnect: every ConnAck re-sends all subscriptions;
//! - `poll()` returns errors in a tight loop while the broker is down: after an error the task
//!   sleeps with exponential backoff ([`INITIAL_BACKOFF`] → `max_reconnect_backoff`), reset only
//!   after a connection stayed up for [`HEALTHY_CONNECTION`], so a connection that dies right
//!   after its ConnAck is not retried every 500 ms forever (issue 10 item 2);
//! - a message above its packet limit fails the connection, and a persistent session redelivers
//!   it on every connect: the task then drains it ([`super::drain`]) and counts it as
//!   `too_large`, so it never wedges the source;
//! - a persistent session needs `clean_session = false` and a stable client id.
//!
//! Memory per source is bounded by `max_channels` (a WARN at [`CHANNEL_WARN_PERCENT`] %, refusal
//! counted beyond it) and channels idle for `channel_idle_evict` leave the series cache.
//!
//! Hot path (about 100k messages/s): a topic is matched without allocating, the payload is
//! parsed once into a borrowed tree, the series is found by a key written into a reused buffer,
//! and readings go to the engine in batches of [`BATCH_SIZE`], whenever the socket is drained,
//! or at the latest every [`FLUSH_INTERVAL`]; above [`PACED_ABOVE_PER_S`] the socket is read in
//! rounds ([`ReadPacer`]).
//! Counters are summed locally and added to [`Metrics`] once per batch.

use crate::log_limit::LogLimiter;
use crate::metrics::Counter;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Outgoing, Packet, Publish, QoS, StateError,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{MqttSettings, Qos, Subscription};
use super::drain::{drain_oversized, DrainTarget};
use super::payload::{decode, DecodeContext, PayloadError, Sample, SampleValue};
use crate::metrics::Metrics;
use crate::model::{now_ns, Quality, Reading, Series, TimestampNs};
use crate::retry::Backoff;
use crate::sources::{ReadingBatch, ReadingTx};

/// Readings per batch sent to the engine. Large enough that the per-batch costs (channel send,
/// counter updates) vanish at 100k readings/s, small enough to stay well under a millisecond of
/// engine work.
pub const BATCH_SIZE: usize = 512;
/// Longest a reading waits in a partial batch while the socket still has more to read (a
/// partial batch goes to the engine as soon as the socket is drained).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Above this many messages a second the source reads in rounds ([`ReadPacer`]): when the
/// socket has nothing more, it waits [`READ_PAUSE`] before reading again instead of waking for
/// every segment. A site's own traffic (a few hundred readings a second) never gets here.
pub const PACED_ABOVE_PER_S: u64 = 10_000;
/// How long a busy source lets its socket fill between rounds of reading. Measured (ingest
/// benchmark, 2,000 sensors, 100k messages/s): unpaced, every `recvfrom` brought about four
/// messages (53,380 calls and 51,479 `epoll_wait`s for 200,000 messages) and the socket reads
/// with the acknowledgements the kernel sends from them were a third of the gateway's CPU. One
/// millisecond (Tokio's timer granularity) is what a reading waits at most, under load only.
pub const READ_PAUSE: Duration = Duration::from_millis(1);
/// The window over which [`ReadPacer`] measures the message rate.
const PACER_WINDOW_NS: i64 = 100_000_000;
/// First wait after a connection error.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// A connection must stay up this long before a failure starts the backoff again from
/// [`INITIAL_BACKOFF`]. A connection that fails sooner failed because of something it met on
/// connecting (a redelivered message, a takeover by a duplicate client id, an ACL kick), which
/// retrying faster does not cure; 10 s is longer than receiving a session's in-flight window
/// takes and short next to a real outage.
pub const HEALTHY_CONNECTION: Duration = Duration::from_secs(10);
/// Capacity of rumqttc's request channel: a SUBSCRIBE per connect, a DISCONNECT at shutdown,
/// and the PUBACKs of committed QoS 1 messages. rumqttc's event loop takes one request per
/// `poll`, and only when it has no received packet buffered, so PUBACKs can be due faster than
/// it sends them: they wait in the source's own queue ([`AckQueue`]) and enter this channel as
/// it has room. A skipped PUBACK would hold one slot of the broker's in-flight window until the
/// next reconnect: 1,105 of them stopped all intake in a 50,000-message test on a loaded machine
/// (the broker had over 3,000 messages out to us).
pub const REQUEST_CHANNEL_CAPACITY: usize = 4096;
/// A WARN is logged when a source's channels reach this share (in %) of its `max_channels`,
/// before anything is refused (issue 14 item 3: no warning before the limit).
pub const CHANNEL_WARN_PERCENT: usize = 80;
/// The series cache is swept for idle channels this many times per `channel_idle_evict`: a
/// channel leaves the cache between 1 and 1.25 × `channel_idle_evict` after its last reading.
pub const EVICT_SWEEPS_PER_IDLE: u32 = 4;
/// LogLimiter key of the channel-limit warning. `#` cannot occur in a published topic
/// (MQTT 3.1.1 §4.7.1.1), so it never shares a key with a topic's warnings.
const CHANNEL_LIMIT_KEY: &str = "#channel-limit";
/// Most (device, point) fault states kept for CIGEM devices.
pub const MAX_FAULT_STATES: usize = 100_000;
/// At most one warning per topic in this interval; the rest are counted, not logged.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Most topics whose warnings are rate-limited individually; when more topics misbehave at
/// once, warnings about new ones are suppressed (still counted) until old entries expire.
pub const MAX_WARN_TOPICS: usize = 1024;
/// Incoming MQTT packets may be this many times `max_payload_bytes` (and at least
/// [`MIN_PACKET_LIMIT`]): such a message is received and refused by size with a counted reason.
/// A larger packet makes rumqttc drop the connection (it checks the length in the fixed header
/// before buffering, so memory stays bounded); the message is then drained as a stream and
/// counted ([`super::drain`]). The factor keeps moderately oversized messages off that slower
/// path while rumqttc's buffer stays at most 4 × `max_payload_bytes` (1 MiB by default).
pub const PACKET_LIMIT_FACTOR: usize = 4;
/// Lower bound of the incoming packet limit.
pub const MIN_PACKET_LIMIT: usize = 1024 * 1024;
/// Outgoing packet limit: the subscriber only sends SUBSCRIBE, PING and DISCONNECT.
pub const OUTGOING_PACKET_LIMIT: usize = 64 * 1024;
/// How long shutdown waits for the engine to take the last partial batch. The engine normally
/// drains its channel until every source has stopped, so this only bounds a stuck engine.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last PUBACKs to go out, and again for the DISCONNECT to go
/// out and the broker to close the connection.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Decides whether the source pauses when its socket has nothing more to read: only while the
/// last full [`PACER_WINDOW_NS`] window brought more than [`PACED_ABOVE_PER_S`] messages a
/// second. Like a network card's interrupt coalescing: under load, fewer wake-ups and reads
/// that each bring many messages; at a site's usual rates, every message is read at once.
#[derive(Debug, Default)]
struct ReadPacer {
    window_start_ns: i64,
    in_window: u64,
    busy: bool,
}

impl ReadPacer {
    /// A message arrived at `now_ns` (the same wall-clock reading as the message's arrival
    /// stamp: a clock step back only starts a new window).
    fn on_message(&mut self, now_ns: i64) {
        let elapsed = now_ns.saturating_sub(self.window_start_ns);
        if !(0..PACER_WINDOW_NS).contains(&elapsed) {
            // A window with no message at all in between is not busy either.
            let full_window = (PACER_WINDOW_NS..2 * PACER_WINDOW_NS).contains(&elapsed);
            self.busy = full_window
                && self.in_window.saturating_mul(1_000_000_000)
                    > PACED_ABOVE_PER_S.saturating_mul(PACER_WINDOW_NS.unsigned_abs());
            self.window_start_ns = now_ns;
            self.in_window = 0;
        }
        self.in_window += 1;
    }

    /// Busy at `now_ns`: the last full window was, and the current one is not over (when
    /// messages stop, no message ends the window, so the pauses stop with it). Once over, the
    /// source is not busy until a message shows a busy window again.
    fn busy(&mut self, now_ns: i64) -> bool {
        self.busy = self.busy && now_ns.saturating_sub(self.window_start_ns) < PACER_WINDOW_NS;
        self.busy
    }
}

/// One MQTT source: a connection to one broker and its subscriptions.
#[derive(Debug)]
pub struct MqttSource {
    settings: MqttSettings,
    client_id: String,
    site: String,
    gateway: String,
    metrics: Arc<Metrics>,
}

impl MqttSource {
    /// Prepare a source. The client id defaults to `anju-<site>-<gateway>-<name>` (characters
    /// other than letters, digits, `-` and `_` become `_`), stable across restarts.
    #[must_use]
    pub fn new(settings: MqttSettings, site: &str, gateway: &str, metrics: Arc<Metrics>) -> Self {
        let client_id = settings.client_id.clone().unwrap_or_else(|| {
            format!("anju-{site}-{gateway}-{}", settings.name)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        });
        Self {
            settings,
            client_id,
            site: site.to_owned(),
            gateway: gateway.to_owned(),
            metrics,
        }
    }

    /// The MQTT client id this source connects with.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The rumqttc options.
    fn options(&self) -> MqttOptions {
        let s = &self.settings;
        let mut options = MqttOptions::new(self.client_id.clone(), s.host.clone(), s.port);
        // Validation guarantees 1 s ≤ keep_alive ≤ 65535 s and a non-empty client id, the
        // preconditions of these two setters (they assert).
        options.set_keep_alive(s.keep_alive);
        options.set_clean_session(s.clean_session);
        // PUBACK only after the readings are in the spool (docs/ARCHITECTURE.md §Invariants: acknowledged to
        // nobody until committed); rumqttc would otherwise ack on receipt, and a crash between
        // receipt and commit would lose QoS 1 messages the broker considers delivered.
        options.set_manual_acks(true);
        options.set_max_packet_size(self.packet_limit(), OUTGOING_PACKET_LIMIT);
        if let Some(user) = &s.username {
            let password = s.password.as_ref().map_or("", |p| p.expose());
            options.set_credentials(user.clone(), password.to_owned());
        }
        if let Some(tls) = &s.tls {
            options.set_transport(tls.mqtt_transport());
        }
        options
    }

    /// rumqttc's incoming packet limit (see [`PACKET_LIMIT_FACTOR`]).
    fn packet_limit(&self) -> usize {
        self.settings
            .max_payload_bytes
            .saturating_mul(PACKET_LIMIT_FACTOR)
            .max(MIN_PACKET_LIMIT)
    }

    /// After rumqttc dropped the connection for a packet of `len` bytes above its limit: drain
    /// the persistent session of oversized messages and count them. True when at least one was
    /// drained (the cause is gone: reconnect at once).
    async fn drain(&self, len: usize, ingest: &mut Ingest) -> bool {
        let s = &self.settings;
        let source = &s.name;
        if s.clean_session {
            // A clean session is discarded on the next connect, message included.
            warn!(source = %source, len, limit = self.packet_limit(),
                "MQTT message above the packet limit dropped (clean session: not redelivered)");
            return false;
        }
        let target = DrainTarget {
            host: &s.host,
            port: s.port,
            tls: s.tls.as_ref(),
            client_id: &self.client_id,
            credentials: s
                .username
                .as_deref()
                .map(|u| (u, s.password.as_ref().map_or("", |p| p.expose()))),
            limit: self.packet_limit(),
        };
        match drain_oversized(&target).await {
            Ok(drained) => {
                for (topic, len) in &drained.oversized {
                    ingest.on_oversized(topic, *len);
                }
                ingest.publish_counters();
                info!(source = %source, drained = drained.oversized.len(), left_for_redelivery = drained.left,
                    "drained MQTT messages above the packet limit from the session");
                !drained.oversized.is_empty()
            }
            Err(e) => {
                warn!(source = %source, error = %e, "cannot drain the MQTT message above the packet limit; retrying after the backoff");
                false
            }
        }
    }

    /// Run until `shutdown` is cancelled or the engine's channel closes. Connection errors are
    /// logged, counted and retried with backoff; nothing here panics on broker or payload input.
    pub async fn run(self, out: ReadingTx, shutdown: CancellationToken) {
        let broker = self.settings.broker();
        let source = self.settings.name.clone();
        let (client, mut eventloop) = AsyncClient::new(self.options(), REQUEST_CHANNEL_CAPACITY);
        let filters: Vec<SubscribeFilter> = self
            .settings
            .subscriptions
            .iter()
            .map(|s| {
                let qos = match s.qos {
                    Qos::AtMostOnce => QoS::AtMostOnce,
                    Qos::AtLeastOnce => QoS::AtLeastOnce,
                };
                SubscribeFilter::new(s.pattern.filter().to_owned(), qos)
            })
            .collect();
        let metrics = Arc::clone(&self.metrics);
        let mut ingest = Ingest::new(
            self.settings.clone(),
            &self.site,
            &self.gateway,
            Arc::clone(&self.metrics),
        );
        info!(source = %source, broker = %broker, tls = self.settings.tls.is_some(), client_id = %self.client_id, "MQTT source starting");

        // Batches handed to the engine whose QoS 1 messages wait for the commit notice, oldest
        // first (PUBACKs go out in the order the messages came, MQTT 3.1.1 §4.6).
        let mut awaiting: Awaiting = VecDeque::new();
        let mut acks = AckQueue::default();
        let mut backoff = Backoff::new(INITIAL_BACKOFF, self.settings.max_reconnect_backoff)
            .with_healthy_after(HEALTHY_CONNECTION);
        let flush_timer = tokio::time::sleep(FLUSH_INTERVAL);
        tokio::pin!(flush_timer);
        // Created once: a fresh `cancelled()` per message registers and removes a waiter under
        // a mutex each time, which showed in profiles at 100k messages/s.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let mut pacer = ReadPacer::default();
        let pause = tokio::time::sleep(READ_PAUSE);
        tokio::pin!(pause);
        let mut pausing = false;
        loop {
            if !acks.is_empty() {
                acks.send(&client);
            }
            // Dropping a pending `poll()` when the timer or shutdown wins is safe enough:
            // rumqttc reads into its codec buffer and keeps decoded packets in its state, so
            // nothing read is lost; at worst an ack is written on the next poll.
            tokio::select! {
                biased;
                () = &mut cancelled => break,
                committed = next_commit(&mut awaiting), if !awaiting.is_empty() => {
                    if let Some((_, pkids)) = awaiting.pop_front() {
                        if committed {
                            acks.extend(pkids);
                            acks.send(&client);
                        }
                    }
                }
                () = &mut flush_timer, if ingest.needs_flush() => {
                    if !ingest.flush(&out, &mut awaiting).await {
                        info!(source = %source, "engine channel closed; MQTT source stopping");
                        return;
                    }
                }
                () = &mut pause, if pausing => pausing = false,
                event = eventloop.poll(), if !pausing => match event {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let was_empty = !ingest.needs_flush();
                        let arrived = now_ns();
                        pacer.on_message(arrived);
                        ingest.on_publish(&publish.topic, &publish.payload, arrived);
                        ingest.hold_for_ack(publish);
                        if ingest.pending_len() >= BATCH_SIZE || ingest.unacked.len() >= BATCH_SIZE {
                            if !ingest.flush(&out, &mut awaiting).await {
                                info!(source = %source, "engine channel closed; MQTT source stopping");
                                return;
                            }
                        } else if was_empty && ingest.needs_flush() {
                            flush_timer.as_mut().reset(tokio::time::Instant::now() + FLUSH_INTERVAL);
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        info!(source = %source, broker = %broker, session_present = ack.session_present, "MQTT connected");
                        // Packet ids of the old connection mean nothing on the new one (and may
                        // be reused): never acknowledge them. The broker redelivers unacknowledged
                        // QoS 1 messages of a kept session; the store de-duplicates by time.
                        awaiting.clear();
                        acks.clear();
                        ingest.unacked.clear();
                        metrics.incr(Counter::MqttConnects, &[("source", &source)]);
                        backoff.connected_at(std::time::Instant::now());
                        // rumqttc does not re-subscribe on reconnect (rumqtt#250): always do it,
                        // also when the session is present (re-subscribing is idempotent).
                        if let Err(e) = client.try_subscribe_many(filters.clone()) {
                            warn!(source = %source, error = %e, "cannot queue MQTT SUBSCRIBE");
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        for (code, filter) in ack.return_codes.iter().zip(&filters) {
                            match code {
                                SubscribeReasonCode::Failure => {
                                    warn!(source = %source, filter = %filter.path, "broker refused the subscription");
                                    metrics.incr(Counter::MqttSubscribeFailures, &[("source", &source)]);
                                }
                                SubscribeReasonCode::Success(qos) => {
                                    debug!(source = %source, filter = %filter.path, ?qos, "subscribed");
                                }
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let delay = backoff.failed_at(std::time::Instant::now());
                        if matches!(e, ConnectionError::Tls(_)) {
                            // Retried like any connection error (a broker's certificate may be
                            // renewed), but said plainly: it will not pass until the CA file, the
                            // broker's certificate or the server name is fixed.
                            warn!(source = %source, broker = %broker, error = %e, retry_in = ?delay,
                                "MQTT TLS handshake refused: check that tls.ca_file signed the broker's certificate and that the certificate names the host (or tls.server_name)");
                            metrics.incr(Counter::MqttTlsErrors, &[("source", &source)]);
                        } else {
                            warn!(source = %source, broker = %broker, error = %e, retry_in = ?delay, "MQTT connection error");
                        }
                        metrics.incr(Counter::MqttConnectionErrors, &[("source", &source)]);
                        if !ingest.flush(&out, &mut awaiting).await {
                            return;
                        }
                        if let Some(len) = packet_too_large(&e) {
                            let drained = tokio::select! {
                                () = &mut cancelled => break,
                                drained = self.drain(len, &mut ingest) => drained,
                            };
                            if drained {
                                continue;
                            }
                        }
                        tokio::select! {
                            () = &mut cancelled => break,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                },
                // The connection has nothing more to read while QoS 1 messages wait for their
                // PUBACKs: the broker may be holding the rest back because its in-flight window
                // (mosquitto `max_inflight_messages`, 20 by default; MQTT 3.1.1 §4.4) is full of
                // them, so waiting for the batch to fill or for the flush interval would only
                // idle both ends (found by the 50,000-id system test: one window per flush
                // interval, over 240 s for 50,000 messages on a loaded machine). Ordered after
                // `poll`, so this runs only when `poll` is pending: under load the socket stays
                // readable and batches stay large. rumqttc's `poll` is cancel-safe here (framed
                // reads and writes are buffered in its codec).
                // The same for readings at QoS 0: the socket drained, nothing would join the
                // batch before more arrives, so the engine gets them now rather than after up to
                // FLUSH_INTERVAL (an alerting reading from a quiet site waited up to 20 ms
                // here). Under load the reads go in rounds (READ_PAUSE), so a batch holds a
                // round's messages (about 100 at 100,000/s), not one.
                () = std::future::ready(()), if ingest.needs_flush() => {
                    if !ingest.flush(&out, &mut awaiting).await {
                        info!(source = %source, "engine channel closed; MQTT source stopping");
                        return;
                    }
                }
                // Also only when `poll` is pending (the socket is drained): a busy source lets
                // it fill for READ_PAUSE before the next round of reads.
                // (The flag first: the clock is read only when the socket is drained.)
                () = std::future::ready(()), if !pausing && pacer.busy => {
                    if pacer.busy(now_ns()) {
                        pausing = true;
                        pause.as_mut().reset(tokio::time::Instant::now() + READ_PAUSE);
                    }
                }
            }
        }

        // Shutdown: hand over what is pending, then say goodbye to the broker (best effort, so
        // a persistent session is kept rather than the broker waiting out the keep-alive).
        let pending = ingest.pending_len();
        if tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, ingest.flush(&out, &mut awaiting))
            .await
            .is_err()
        {
            warn!(source = %source, dropped = pending, "engine did not take the last readings at shutdown");
        }
        // Acknowledge what the engine commits meanwhile (the engine keeps committing until every
        // source has stopped); the PUBACKs are queued ahead of the DISCONNECT below. Whatever is
        // not committed in time stays unacknowledged and the broker delivers it again.
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, async {
            while let Some((rx, pkids)) = awaiting.pop_front() {
                if rx.await.is_ok() {
                    acks.extend(pkids);
                }
            }
        })
        .await;
        // The event loop takes the PUBACKs from the request channel as it is polled: poll until
        // it has written the last one (they go out in order), so that none is still in the
        // channel when the DISCONNECT is queued and the loop dropped. Whatever messages arrive
        // meanwhile stay unacknowledged and come again.
        let last = acks.last();
        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
            let Some(last) = last else { return };
            loop {
                acks.send(&client);
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::PubAck(pkid)))
                        if pkid == last && acks.is_empty() =>
                    {
                        break
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .await;
        // Then wait for the broker to close the connection (MQTT 3.1.1 §3.14.4: the server
        // closes it on a DISCONNECT), bounded: it reads a connection's packets in order, so once
        // it has closed this one it has also taken the PUBACKs written before the DISCONNECT.
        // Dropping the socket as soon as the DISCONNECT was written left the broker to read the
        // PUBACKs after the socket had closed under it, or after the next session (same client
        // id; a reload's comes within milliseconds) had taken the session over: committed QoS 1
        // messages came again (the live test stopping at once: 7 runs of 58 under CPU load
        // before, none of 62 with this wait; 2026-12-01).
        if client.try_disconnect().is_ok() {
            let closed = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
                // Messages that come meanwhile stay unacknowledged and come again.
                while eventloop.poll().await.is_ok() {}
            })
            .await;
            if closed.is_err() {
                debug!(source = %source, "the broker had not closed the connection {DISCONNECT_TIMEOUT:?} after the DISCONNECT");
            }
        }
        info!(source = %source, "MQTT source stopped");
    }
}

/// The packet length, when rumqttc dropped the connection because an incoming packet was above
/// its limit (`mqttbytes::Error::PayloadSizeLimitExceeded`, raised from the fixed header before
/// the packet is read).
fn packet_too_large(e: &ConnectionError) -> Option<usize> {
    match e {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(len),
        )) => Some(*len),
        _ => None,
    }
}

/// Batches waiting for the engine's commit notice, with the packet ids of the QoS 1 messages
/// they carry (the payloads are not kept: a PUBACK needs only the id, MQTT 3.1.1 §3.4).
type Awaiting = VecDeque<(tokio::sync::oneshot::Receiver<()>, Vec<u16>)>;

/// PUBACKs due (their messages are committed), oldest first, not yet in rumqttc's request
/// channel. Never dropped while the connection lives: each one frees a slot of the broker's
/// in-flight window. Bounded by that window (the broker sends no more unacknowledged messages).
#[derive(Debug, Default)]
struct AckQueue {
    due: VecDeque<u16>,
}

impl AckQueue {
    fn extend(&mut self, pkids: Vec<u16>) {
        self.due.extend(pkids);
    }

    fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// The packet id of the newest PUBACK due.
    fn last(&self) -> Option<u16> {
        self.due.back().copied()
    }

    /// Packet ids of a connection that ended mean nothing on the next one.
    fn clear(&mut self) {
        self.due.clear();
    }

    /// Move PUBACKs into the request channel, in order, while it has room; the rest wait for
    /// the event loop to take some (each `poll` may take one).
    fn send(&mut self, client: &AsyncClient) {
        while let Some(&pkid) = self.due.front() {
            // `try_ack` needs a `Publish`; it reads only the QoS and the packet id.
            let mut ack = Publish::new("", QoS::AtLeastOnce, Vec::new());
            ack.pkid = pkid;
            // The only error is a full channel (the event loop, its receiver, lives as long
            // as `client` is used): keep the PUBACK for the next round.
            if client.try_ack(&ack).is_err() {
                break;
            }
            self.due.pop_front();
        }
    }
}

/// Wait for the oldest batch's commit notice: true when committed, false when the engine
/// dropped it uncommitted. Pending forever when nothing waits.
async fn next_commit(awaiting: &mut Awaiting) -> bool {
    match awaiting.front_mut() {
        Some((rx, _)) => rx.await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Counters summed between two batches, per subscription.
#[derive(Debug, Default, Clone, Copy)]
struct SubCounters {
    messages: u64,
    readings: u64,
    skipped: u64,
    series_limit: u64,
}

/// Everything the subscriber knows between messages. Separate from the connection so that it
/// can be driven by tests and benchmarks without a broker.
#[derive(Debug)]
pub(crate) struct Ingest {
    source: String,
    site: String,
    gateway: String,
    subs: Vec<Subscription>,
    max_payload_bytes: usize,
    counters: Vec<SubCounters>,
    unmatched: u64,
    /// Series by [`write_key`] key, bounded by `max_channels`.
    series: SeriesCache,
    /// Reused key buffer, so a cache hit allocates nothing.
    key: Vec<u8>,
    /// Last CIGEM `sensor_state` per device, then point.
    faults: HashMap<String, HashMap<String, i16>>,
    fault_count: usize,
    /// State reports of the message being decoded, applied only if it decodes fully.
    pending_states: Vec<(Arc<Series>, String, i16)>,
    batch: Vec<Reading>,
    /// QoS 1 messages whose readings are in `batch`, acknowledged once the engine committed
    /// them (manual acks; see [`MqttSource::run`]).
    unacked: Vec<u16>,
    warnings: LogLimiter,
    metrics: Arc<Metrics>,
}

impl Ingest {
    pub(crate) fn new(
        settings: MqttSettings,
        site: &str,
        gateway: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            source: settings.name,
            site: site.to_owned(),
            gateway: gateway.to_owned(),
            counters: vec![SubCounters::default(); settings.subscriptions.len()],
            subs: settings.subscriptions,
            max_payload_bytes: settings.max_payload_bytes,
            unmatched: 0,
            series: SeriesCache::new(settings.max_channels, settings.channel_idle_evict),
            key: Vec::with_capacity(128),
            faults: HashMap::new(),
            fault_count: 0,
            pending_states: Vec::new(),
            batch: Vec::with_capacity(BATCH_SIZE),
            unacked: Vec::new(),
            warnings: LogLimiter::new(WARN_INTERVAL, MAX_WARN_TOPICS),
            metrics,
        }
    }

    #[cfg(test)]
    pub(crate) fn has_pending(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Readings or QoS 1 messages wait to go to the engine. Messages that decoded to nothing
    /// (malformed, refused by the channel limit) count: their PUBACKs wait for the flush, and a
    /// broker stops sending when its in-flight window (mosquitto `max_inflight_messages`) is full
    /// of unacknowledged ones, so holding them until a good reading came stalled intake for good
    /// (found by the 50,000-id system test: 45,000 refused QoS 1 messages in a row).
    pub(crate) fn needs_flush(&self) -> bool {
        !self.batch.is_empty() || !self.unacked.is_empty()
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.batch.len()
    }

    /// Take the pending readings (and publish the counters).
    pub(crate) fn take_batch(&mut self) -> Vec<Reading> {
        self.publish_counters();
        std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_SIZE))
    }

    /// Send the pending readings to the engine; false when the engine is gone. QoS 1 messages
    /// of the batch go to `awaiting`, to be acknowledged when the engine reports the commit.
    async fn flush(&mut self, out: &ReadingTx, awaiting: &mut Awaiting) -> bool {
        let readings = self.take_batch();
        let unacked = std::mem::take(&mut self.unacked);
        if readings.is_empty() && unacked.is_empty() {
            return true;
        }
        let on_commit = if unacked.is_empty() {
            None
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            awaiting.push_back((rx, unacked));
            Some(tx)
        };
        out.send(ReadingBatch {
            readings,
            on_commit,
        })
        .await
        .is_ok()
    }

    /// Hold a QoS 1 message for acknowledgement after its readings are committed. Messages that
    /// decoded to nothing (malformed, unmatched) are held too: acknowledging them in order keeps
    /// the broker from redelivering garbage forever.
    fn hold_for_ack(&mut self, publish: Publish) {
        if publish.qos != QoS::AtMostOnce {
            self.unacked.push(publish.pkid);
        }
    }

    /// Count a message that was too large to be received at all (drained from the session by
    /// [`super::drain`]): as `too_large` of the subscription its topic matches, like a smaller
    /// oversized message.
    pub(crate) fn on_oversized(&mut self, topic: &str, len: usize) {
        let Some((index, sub)) = self
            .subs
            .iter()
            .enumerate()
            .find(|(_, s)| s.pattern.matches(topic).is_some())
        else {
            self.unmatched += 1;
            return;
        };
        if let Some(c) = self.counters.get_mut(index) {
            c.messages += 1;
        }
        self.metrics.incr(
            Counter::MqttPayloadErrors,
            &[("subscription", sub.name.as_str()), ("reason", "too_large")],
        );
        if let Some(suppressed) = self.warnings.allow(topic) {
            warn!(source = %self.source, topic, subscription = %sub.name, len, max = self.max_payload_bytes,
                suppressed, "dropped oversized MQTT message (drained from the session)");
        }
    }

    /// Add the locally summed counters to the shared metrics.
    fn publish_counters(&mut self) {
        for (sub, c) in self.subs.iter().zip(self.counters.iter_mut()) {
            let labels = [("subscription", sub.name.as_str())];
            for (name, value) in [
                (Counter::MqttMessages, c.messages),
                (Counter::MqttReadings, c.readings),
                (Counter::MqttValuesSkipped, c.skipped),
                (Counter::MqttSeriesLimitDropped, c.series_limit),
            ] {
                if value > 0 {
                    self.metrics.add(name, &labels, value);
                }
            }
            *c = SubCounters::default();
        }
        if self.unmatched > 0 {
            self.metrics.add(
                Counter::MqttUnmatchedMessages,
                &[("source", &self.source)],
                self.unmatched,
            );
            self.unmatched = 0;
        }
        if self.series.evicted > 0 {
            self.metrics.add(
                Counter::MqttChannelsEvicted,
                &[("source", &self.source)],
                self.series.evicted,
            );
            self.series.evicted = 0;
        }
    }

    /// Decode one message into the pending batch.
    pub(crate) fn on_publish(&mut self, topic: &str, payload: &[u8], received_ns: TimestampNs) {
        let Self {
            source,
            site,
            gateway,
            subs,
            max_payload_bytes,
            counters,
            unmatched,
            series,
            key,
            faults,
            fault_count,
            pending_states,
            batch,
            unacked: _,
            warnings,
            metrics,
        } = self;
        series.evict_idle(received_ns);
        let Some((index, sub, caps)) = subs
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.pattern.matches(topic).map(|caps| (i, s, caps)))
        else {
            // Possible with a persistent session after a subscription was removed from the
            // config: the broker still delivers the old filter.
            *unmatched += 1;
            if let Some(suppressed) = warnings.allow(topic) {
                warn!(source = %source, topic, suppressed, "MQTT message on a topic no subscription matches; dropped");
            }
            return;
        };
        let Some(counter) = counters.get_mut(index) else {
            return;
        };
        let names = (site.as_str(), gateway.as_str());
        counter.messages += 1;
        let result = if payload.len() > *max_payload_bytes {
            Err(PayloadError::TooLarge {
                len: payload.len(),
                max: *max_payload_bytes,
            })
        } else {
            let mark = batch.len();
            let ctx = DecodeContext {
                kind: sub.quantity,
                unit: &sub.unit,
                received_ns,
            };
            let mut emitted = 0u64;
            let mut dropped = 0u64;
            let result = decode(&sub.payload, payload, &ctx, &mut |sample: Sample<'_>| {
                let Some(s) = series_for(
                    series,
                    key,
                    names,
                    (index, sub),
                    &caps,
                    &sample,
                    received_ns,
                ) else {
                    dropped += 1;
                    return;
                };
                let reading = match sample.value {
                    SampleValue::Value(v) => match device_fault(faults, &s, &sample) {
                        // Keep the value for the technician; only `Good` values reach rules.
                        Some(code) if v.is_finite() => Reading {
                            series: s,
                            ts: sample.ts,
                            value: Some(v),
                            raw: None,
                            quality: Quality::DeviceFault(code),
                        },
                        _ => Reading::good(s, sample.ts, v),
                    },
                    SampleValue::Fault(code) => {
                        Reading::bad(s, sample.ts, Quality::DeviceFault(code))
                    }
                    SampleValue::State(code) => {
                        if let Some(point) = sample.base.as_deref() {
                            pending_states.push((Arc::clone(&s), point.to_owned(), code));
                        }
                        Reading::good(s, sample.ts, f64::from(code))
                    }
                };
                batch.push(reading);
                emitted += 1;
            });
            counter.series_limit += dropped;
            if dropped > 0 {
                // One line per interval for the whole source, not per topic: a publisher that
                // invents ids uses a new topic for each.
                if let Some(suppressed) = warnings.allow(CHANNEL_LIMIT_KEY) {
                    warn!(source = %source, topic, subscription = %sub.name, dropped, suppressed,
                        max_channels = series.max, "channel limit reached; readings of new channels refused");
                }
            }
            if series.take_warning() {
                warn!(source = %source, channels = series.map.len(), max_channels = series.max,
                    "MQTT source at {CHANNEL_WARN_PERCENT} % of its channel limit; readings of new channels will be refused beyond it (raise max_channels if the site has that many)");
            }
            match result {
                Ok(report) => {
                    counter.readings += emitted;
                    counter.skipped += report.skipped as u64;
                    for (s, point, code) in pending_states.drain(..) {
                        record_state(faults, fault_count, &s.device, point, code);
                    }
                    Ok(())
                }
                Err(e) => {
                    // All or nothing: drop what this message already produced.
                    batch.truncate(mark);
                    pending_states.clear();
                    Err(e)
                }
            }
        };
        if let Err(e) = result {
            metrics.incr(
                Counter::MqttPayloadErrors,
                &[("subscription", sub.name.as_str()), ("reason", e.reason())],
            );
            if let Some(suppressed) = warnings.allow(topic) {
                warn!(source = %source, topic, subscription = %sub.name, reason = e.reason(),
                    error = %e, suppressed, "dropped malformed MQTT payload");
            }
        }
    }
}

/// The fault code to attach to a data reading: the last `sensor_state` of its point, if ≠ 0.
fn device_fault(
    faults: &HashMap<String, HashMap<String, i16>>,
    series: &Series,
    sample: &Sample<'_>,
) -> Option<i16> {
    if faults.is_empty() {
        return None;
    }
    let point = sample.base.as_deref()?;
    let code = *faults.get(series.device.as_str())?.get(point)?;
    (code != 0).then_some(code)
}

/// Remember a `sensor_state` report (bounded by [`MAX_FAULT_STATES`]).
fn record_state(
    faults: &mut HashMap<String, HashMap<String, i16>>,
    count: &mut usize,
    device: &str,
    point: String,
    code: i16,
) {
    if let Some(points) = faults.get_mut(device) {
        if let Some(slot) = points.get_mut(point.as_str()) {
            *slot = code;
            return;
        }
    }
    if *count >= MAX_FAULT_STATES {
        return;
    }
    *count += 1;
    faults
        .entry(device.to_owned())
        .or_default()
        .insert(point, code);
}

/// Append `s` length-prefixed, so that distinct component lists never give the same key.
fn push_part(key: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => key.extend_from_slice(&u32::MAX.to_le_bytes()),
        Some(s) => {
            let len = u32::try_from(s.len()).unwrap_or(u32::MAX - 1);
            key.extend_from_slice(&len.to_le_bytes());
            key.extend_from_slice(s.as_bytes());
        }
    }
}

/// Write the cache key of a sample: subscription, topic captures, and the sample's device,
/// point, field, quantity and unit. Everything else a series depends on is fixed per
/// subscription.
fn write_key(key: &mut Vec<u8>, index: usize, caps: &[&str], sample: &Sample<'_>) {
    key.clear();
    key.extend_from_slice(&u32::try_from(index).unwrap_or(u32::MAX).to_le_bytes());
    for c in caps {
        push_part(key, Some(c));
    }
    push_part(key, sample.device.as_deref());
    push_part(key, sample.base.as_deref());
    push_part(key, sample.field);
    key.push(sample.kind as u8);
    push_part(key, Some(sample.unit));
}

/// A source's series, by [`write_key`] key, with the time each was last seen: at most `max`,
/// and those idle for `idle_ns` are evicted.
///
/// Eviction loses nothing: a series is a name, rebuilt equal on the channel's next reading; the
/// engine keys its channel state by the series key, not by this `Arc`.
#[derive(Debug)]
struct SeriesCache {
    map: HashMap<Box<[u8]>, (Arc<Series>, TimestampNs), crate::model::FastHash>,
    max: usize,
    idle_ns: i64,
    /// Receive time at or after which the next sweep runs.
    next_sweep_ns: TimestampNs,
    /// The WARN at [`CHANNEL_WARN_PERCENT`] % is due (set on crossing, taken by the caller).
    warn_due: bool,
    /// The WARN was given and the cache has not fallen below the mark since.
    warned: bool,
    /// Channels evicted since the counters were last published.
    evicted: u64,
}

impl SeriesCache {
    fn new(max: usize, idle: Duration) -> Self {
        Self {
            map: HashMap::default(),
            max,
            idle_ns: i64::try_from(idle.as_nanos()).unwrap_or(i64::MAX),
            next_sweep_ns: TimestampNs::MIN,
            warn_due: false,
            warned: false,
            evicted: 0,
        }
    }

    /// Channel count at which the WARN is given.
    fn warn_at(&self) -> usize {
        self.max.saturating_mul(CHANNEL_WARN_PERCENT) / 100
    }

    fn get(&mut self, key: &[u8], now: TimestampNs) -> Option<Arc<Series>> {
        let (series, seen) = self.map.get_mut(key)?;
        *seen = now;
        Some(Arc::clone(series))
    }

    /// Insert unless full; false when the channel limit refuses it.
    fn insert(&mut self, key: &[u8], series: Arc<Series>, now: TimestampNs) -> bool {
        if self.map.len() >= self.max {
            return false;
        }
        self.map.insert(key.into(), (series, now));
        if self.map.len() >= self.warn_at() && !self.warned {
            self.warned = true;
            self.warn_due = true;
        }
        true
    }

    /// True once per crossing of the WARN mark.
    fn take_warning(&mut self) -> bool {
        std::mem::take(&mut self.warn_due)
    }

    /// Drop channels idle for `idle_ns`, at most once per sweep period. The clock is the
    /// receive time: a clock step back evicts nothing, one forward evicts early (rebuilt on the
    /// next reading).
    fn evict_idle(&mut self, now: TimestampNs) {
        if now < self.next_sweep_ns {
            return;
        }
        self.next_sweep_ns = now.saturating_add(self.idle_ns / i64::from(EVICT_SWEEPS_PER_IDLE));
        let cutoff = now.saturating_sub(self.idle_ns);
        let before = self.map.len();
        self.map.retain(|_, (_, seen)| *seen > cutoff);
        let removed = before - self.map.len();
        if removed > 0 {
            self.evicted += removed as u64;
            // Give the memory back when most of the table is empty (a HashMap keeps its
            // capacity otherwise).
            if self.map.len() < self.map.capacity() / 4 {
                self.map.shrink_to_fit();
            }
        }
        if self.map.len() < self.warn_at() {
            self.warned = false;
        }
    }
}

/// The series of a sample, built on first sight. `None` when the channel limit is reached.
fn series_for(
    cache: &mut SeriesCache,
    key: &mut Vec<u8>,
    (site, gateway): (&str, &str),
    (index, sub): (usize, &Subscription),
    caps: &super::topic::Captures<'_>,
    sample: &Sample<'_>,
    now: TimestampNs,
) -> Option<Arc<Series>> {
    write_key(key, index, caps.as_slice(), sample);
    if let Some(series) = cache.get(key.as_slice(), now) {
        return Some(series);
    }
    if cache.map.len() >= cache.max {
        return None;
    }
    let device = match &sample.device {
        Some(d) => d.to_string(),
        None => sub.device.render(caps),
    };
    let mut point = String::new();
    match (&sample.base, &sub.point) {
        (Some(base), _) => point.push_str(base),
        (None, Some(template)) => template.render_into(caps, &mut point),
        (None, None) => {}
    }
    if let Some(field) = sample.field {
        if !point.is_empty() {
            point.push('.');
        }
        point.push_str(field);
    }
    if point.is_empty() {
        // Unreachable after validation (a point source is required); the name is a safe stand-in.
        point.push_str(&sub.name);
    }
    let mut tags: BTreeMap<String, String> = sub.tags.clone();
    for (name, value) in sub.pattern.names().iter().zip(caps.as_slice()) {
        tags.insert(name.clone(), (*value).to_owned());
    }
    let series = Arc::new(Series::new(
        site,
        gateway,
        &device,
        &point,
        sample.kind,
        sample.unit,
        &tags,
    ));
    cache
        .insert(key.as_slice(), Arc::clone(&series), now)
        .then_some(series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QuantityKind;
    use crate::sources::mqtt::config::MqttSourceConfig;
    use crate::sources::mqtt::payload::tests::RECEIVED;

    /// Messages `every_ns` apart from `from_ns` until `until_ns`; the time of the last one.
    fn feed(pacer: &mut ReadPacer, from_ns: i64, until_ns: i64, every_ns: i64) -> i64 {
        let mut t = from_ns;
        let mut last = from_ns;
        while t < until_ns {
            pacer.on_message(t);
            last = t;
            t += every_ns;
        }
        last
    }

    #[test]
    fn reads_are_paced_only_above_the_rate_and_only_while_messages_come() {
        const MS: i64 = 1_000_000;
        // 20,000 messages a second (one every 50 µs): busy once a full window was seen.
        let mut fast = ReadPacer::default();
        let t0 = 1_700_000_000_000 * MS;
        feed(&mut fast, t0, t0 + 90 * MS, 50_000);
        assert!(!fast.busy(t0 + 90 * MS), "no full window seen yet");
        let last = feed(&mut fast, t0 + 90 * MS, t0 + 250 * MS, 50_000);
        assert!(fast.busy(last));
        // The messages stop: the pauses stop with the window, and a window with a gap of more
        // than a whole window in it does not count as busy.
        assert!(!fast.busy(last + PACER_WINDOW_NS + MS));
        fast.on_message(last + 3 * PACER_WINDOW_NS);
        assert!(!fast.busy(last + 3 * PACER_WINDOW_NS));
        // 5,000 a second (a busy site is a few hundred): never paced.
        let mut slow = ReadPacer::default();
        let last = feed(&mut slow, t0, t0 + 1_000 * MS, 200_000);
        assert!(!slow.busy(last));
        // Just above the threshold, and just below it.
        let mut above = ReadPacer::default();
        let last = feed(&mut above, t0, t0 + 300 * MS, 95_000);
        assert!(above.busy(last), "10,526 a second");
        let mut below = ReadPacer::default();
        let last = feed(&mut below, t0, t0 + 300 * MS, 105_000);
        assert!(!below.busy(last), "9,524 a second");
        // The wall clock stepped back: a new window, not a busy one.
        let mut stepped = ReadPacer::default();
        let last = feed(&mut stepped, t0, t0 + 250 * MS, 50_000);
        assert!(stepped.busy(last));
        stepped.on_message(t0 - 1_000 * MS);
        assert!(!stepped.busy(t0 - 1_000 * MS));
    }

    fn ingest(toml_text: &str) -> (Ingest, Arc<Metrics>) {
        let config: MqttSourceConfig = toml::from_str(toml_text).expect("toml");
        let settings = config.validate("mqtt[0]").expect("valid");
        let metrics = Arc::new(Metrics::new());
        (
            Ingest::new(settings, "xa", "gw1", Arc::clone(&metrics)),
            metrics,
        )
    }

    const CONFIG: &str = r#"
        name = "site"
        max_payload_bytes = 300
        [[subscriptions]]
        name = "nodes"
        topic = "sites/{site}/nodes/{node}/up"
        device = "{node}"
        quantity = "temperature"
        unit = "°C"
        tags = { structure = "block-A" }
        payload = { format = "json", readings = "readings", sensor = "sensor", value = "value", unit = "unit", time = "ts" }
        [[subscriptions]]
        name = "single"
        topic = "sensors/{device}"
        quantity = "settlement"
        unit = "mm"
        payload = { format = "json", sensor = "sensor", value = "value", time = "ts" }
        [[subscriptions]]
        name = "geohazard"
        topic = "$dp"
        payload = { format = "cigem" }
    "#;

    /// (key, line prefix, ts, value, quality code) of each reading, for exact comparison.
    fn summary(batch: &[Reading]) -> Vec<(String, String, i64, Option<f64>, i64)> {
        batch
            .iter()
            .map(|r| {
                (
                    r.series.key.clone(),
                    r.series.line_prefix.clone(),
                    r.ts,
                    r.value,
                    r.quality.code(),
                )
            })
            .collect()
    }

    #[test]
    fn json_readings_get_topic_tags_and_cached_series() {
        let (mut ing, metrics) = ingest(CONFIG);
        let payload = r#"{"ts":"2026-11-29T10:00:00.000Z","readings":[{"sensor":"t1","value":21.53,"unit":"°C"},{"sensor":"t2","value":19.5}]}"#.as_bytes();
        ing.on_publish("sites/xb/nodes/n7/up", payload, RECEIVED);
        ing.on_publish("sites/xb/nodes/n7/up", payload, RECEIVED);
        let batch = ing.take_batch();
        // 2026-11-29T10:00:00Z = 1 795 946 400 s (payload::tests).
        let ts = 1_795_946_400_000_000_000;
        let t1 =
            "temperature,device=n7,gateway=gw1,node=n7,point=t1,site=xb,structure=block-A,unit=°C";
        let t2 =
            "temperature,device=n7,gateway=gw1,node=n7,point=t2,site=xb,structure=block-A,unit=°C";
        assert_eq!(
            summary(&batch),
            [
                ("n7/t1".to_owned(), t1.to_owned(), ts, Some(21.53), 0),
                ("n7/t2".to_owned(), t2.to_owned(), ts, Some(19.5), 0),
                ("n7/t1".to_owned(), t1.to_owned(), ts, Some(21.53), 0),
                ("n7/t2".to_owned(), t2.to_owned(), ts, Some(19.5), 0),
            ]
        );
        assert!(
            Arc::ptr_eq(&batch[0].series, &batch[2].series),
            "series is cached"
        );
        assert_eq!(ing.series.map.len(), 2);
        assert_eq!(
            metrics.get(Counter::MqttMessages, &[("subscription", "nodes")]),
            2
        );
        assert_eq!(
            metrics.get(Counter::MqttReadings, &[("subscription", "nodes")]),
            4
        );
    }

    #[test]
    fn device_placeholder_and_simulator_single_form() {
        let (mut ing, _) = ingest(CONFIG);
        ing.on_publish(
            "sensors/plate-3",
            br#"{"sensor":"s1","value":1.5,"ts":1764410000123}"#,
            RECEIVED,
        );
        let batch = ing.take_batch();
        assert_eq!(
            summary(&batch),
            [(
                "plate-3/s1".to_owned(),
                "settlement,device=plate-3,gateway=gw1,point=s1,site=xa,unit=mm".to_owned(),
                1_764_410_000_123_000_000,
                Some(1.5),
                0
            )]
        );
    }

    #[test]
    fn malformed_oversized_and_unmatched_messages_are_counted_and_dropped() {
        let (mut ing, metrics) = ingest(CONFIG);
        // Second reading lacks a value: the whole message is dropped, including the first.
        ing.on_publish(
            "sites/xb/nodes/n7/up",
            br#"{"readings":[{"sensor":"t1","value":1},{"sensor":"t2"}]}"#,
            RECEIVED,
        );
        ing.on_publish("sites/xb/nodes/n7/up", b"garbage", RECEIVED);
        ing.on_publish("sites/xb/nodes/n7/up", b"garbage", RECEIVED);
        ing.on_publish("sensors/x", &[b' '; 301], RECEIVED);
        ing.on_publish("elsewhere", b"{}", RECEIVED);
        assert!(!ing.has_pending());
        let _ = ing.take_batch();
        let errors = |sub: &str, reason: &str| {
            metrics.get(
                Counter::MqttPayloadErrors,
                &[("subscription", sub), ("reason", reason)],
            )
        };
        assert_eq!(errors("nodes", "missing_field"), 1);
        assert_eq!(errors("nodes", "not_json"), 2);
        assert_eq!(errors("single", "too_large"), 1);
        assert_eq!(
            metrics.get(Counter::MqttUnmatchedMessages, &[("source", "site")]),
            1
        );
        assert_eq!(
            metrics.get(Counter::MqttMessages, &[("subscription", "nodes")]),
            3
        );
        assert_eq!(metrics.total(Counter::MqttReadings), 0);
    }

    /// One plain-JSON reading of sensor `s{i}` on `sensors/x`.
    fn sensor_msg(i: usize) -> Vec<u8> {
        format!(r#"{{"sensor":"s{i}","value":{i},"ts":1764410000123}}"#).into_bytes()
    }

    #[test]
    fn channels_beyond_the_cap_are_refused_and_idle_ones_evicted() {
        let text = CONFIG.replacen(
            "max_payload_bytes = 300",
            "max_payload_bytes = 300\nmax_channels = 10\nchannel_idle_evict = \"1m\"",
            1,
        );
        let (mut ing, metrics) = ingest(&text);
        for i in 0..7 {
            ing.on_publish("sensors/x", &sensor_msg(i), RECEIVED);
        }
        assert!(!ing.series.warned, "7 of 10 is below the 80 % mark");
        ing.on_publish("sensors/x", &sensor_msg(7), RECEIVED);
        assert!(ing.series.warned, "8 of 10 gives the WARN");
        for i in 8..13 {
            ing.on_publish("sensors/x", &sensor_msg(i), RECEIVED);
        }
        // s0..s9 known: a known channel still lands at the cap.
        ing.on_publish("sensors/x", &sensor_msg(3), RECEIVED);
        let batch = ing.take_batch();
        let points: Vec<&str> = batch.iter().map(|r| r.series.point.as_str()).collect();
        assert_eq!(
            points,
            ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s3"]
        );
        let refused = || {
            metrics.get(
                Counter::MqttSeriesLimitDropped,
                &[("subscription", "single")],
            )
        };
        assert_eq!(refused(), 3);
        // s3 was seen 30 s later than the rest: 61 s after the start only it is still live.
        let s = 1_000_000_000;
        ing.on_publish("sensors/x", &sensor_msg(3), RECEIVED + 30 * s);
        ing.on_publish("sensors/x", &sensor_msg(20), RECEIVED + 61 * s);
        assert_eq!(ing.series.map.len(), 2, "s3 and the new s20");
        assert!(
            !ing.series.warned,
            "below the mark again: the WARN is re-armed"
        );
        for i in 21..40 {
            ing.on_publish("sensors/x", &sensor_msg(i), RECEIVED + 61 * s);
        }
        let batch = ing.take_batch();
        assert_eq!(batch.len(), 2 + 8, "s3, s20, then 8 new until the cap");
        assert_eq!(refused(), 3 + 11);
        assert_eq!(
            metrics.get(Counter::MqttChannelsEvicted, &[("source", "site")]),
            9
        );
    }

    /// Memory of the source's series cache per channel, from RSS before and after 50,000
    /// channels: `cargo test -p anju-gateway --release --lib memory_per_channel -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "measurement; run alone in release mode"]
    fn memory_per_channel() {
        const CHANNELS: usize = 50_000;
        fn rss_bytes() -> usize {
            /// statm counts pages; 4 KiB on x86_64 and aarch64 Linux.
            const PAGE: usize = 4096;
            let statm = std::fs::read_to_string("/proc/self/statm").expect("procfs");
            statm
                .split(' ')
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
                .expect("resident pages")
                * PAGE
        }
        let text = CONFIG.replacen(
            "max_payload_bytes = 300",
            &format!("max_payload_bytes = 300\nmax_channels = {CHANNELS}"),
            1,
        );
        let (mut ing, _) = ingest(&text);
        let messages: Vec<Vec<u8>> = (0..CHANNELS).map(sensor_msg).collect();
        let before = rss_bytes();
        for m in &messages {
            ing.on_publish("sensors/x", m, RECEIVED);
            if ing.pending_len() >= BATCH_SIZE {
                drop(ing.take_batch());
            }
        }
        drop(ing.take_batch());
        let after = rss_bytes();
        assert_eq!(ing.series.map.len(), CHANNELS);
        println!(
            "series cache: {} bytes per channel ({CHANNELS} channels, RSS {before} -> {after})",
            after.saturating_sub(before) / CHANNELS
        );
    }

    #[test]
    fn cigem_sensor_state_marks_later_readings_of_that_point() {
        let (mut ing, _) = ingest(CONFIG);
        let data = br#"{"dev1":{"L1_LF_1":{"2026-03-14T07:04:03.000Z":10.86},"L1_QJ_1":{"2026-03-14T07:04:03.000Z":{"X":3.15}}}}"#;
        ing.on_publish("$dp", data, RECEIVED);
        let mut status = vec![0x10];
        status.extend_from_slice(br#"{"dev1":{"S1_ZT_1":{"battery_volt":3.6,"sensor_state":{"L1_LF_1":3,"L1_QJ_1":0}}}}"#);
        ing.on_publish("$dp", &status, RECEIVED);
        ing.on_publish("$dp", data, RECEIVED);
        // Back to normal.
        ing.on_publish(
            "$dp",
            br#"{"dev1":{"S1_ZT_1":{"sensor_state":{"L1_LF_1":0}}}}"#,
            RECEIVED,
        );
        ing.on_publish(
            "$dp",
            br#"{"dev1":{"L1_LF_1":{"2026-03-14T07:04:03.000Z":-4321.0}}}"#,
            RECEIVED,
        );
        ing.on_publish(
            "$dp",
            br#"{"dev1":{"L1_LF_1":{"2026-03-14T07:04:03.000Z":10.9}}}"#,
            RECEIVED,
        );
        let batch = ing.take_batch();
        let t = 1_773_471_843_000_000_000;
        let got: Vec<(String, i64, Option<f64>, Quality)> = batch
            .iter()
            .map(|r| (r.series.key.clone(), r.ts, r.value, r.quality))
            .collect();
        let row = |k: &str, ts, v, q| (k.to_owned(), ts, v, q);
        assert_eq!(
            got,
            [
                row("dev1/L1_LF_1", t, Some(10.86), Quality::Good),
                row("dev1/L1_QJ_1.X", t, Some(3.15), Quality::Good),
                row(
                    "dev1/S1_ZT_1.battery_volt",
                    RECEIVED,
                    Some(3.6),
                    Quality::Good
                ),
                row(
                    "dev1/L1_LF_1.sensor_state",
                    RECEIVED,
                    Some(3.0),
                    Quality::Good
                ),
                row(
                    "dev1/L1_QJ_1.sensor_state",
                    RECEIVED,
                    Some(0.0),
                    Quality::Good
                ),
                row("dev1/L1_LF_1", t, Some(10.86), Quality::DeviceFault(3)),
                row("dev1/L1_QJ_1.X", t, Some(3.15), Quality::Good),
                row(
                    "dev1/L1_LF_1.sensor_state",
                    RECEIVED,
                    Some(0.0),
                    Quality::Good
                ),
                row("dev1/L1_LF_1", t, None, Quality::DeviceFault(-2)),
                row("dev1/L1_LF_1", t, Some(10.9), Quality::Good),
            ]
        );
        assert_eq!(batch[0].series.kind, QuantityKind::Crack);
        assert_eq!(
            batch[0].series.line_prefix,
            "crack,device=dev1,gateway=gw1,point=L1_LF_1,site=xa,unit=mm"
        );
        assert_eq!(batch[3].series.kind, QuantityKind::Status);
    }

    #[test]
    fn default_client_id_is_stable_and_sanitised() {
        let config: MqttSourceConfig = toml::from_str(CONFIG).expect("toml");
        let settings = config.validate("mqtt[0]").expect("valid");
        let source = MqttSource::new(settings, "Xi'an 1", "gw1", Arc::new(Metrics::new()));
        assert_eq!(source.client_id(), "anju-Xi_an_1-gw1-site");
    }

    /// Per-message cost of the ingest path for the benchmark's message shape:
    /// `cargo test -p anju-gateway --release --lib ingest_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "micro-benchmark; run in release mode"]
    fn ingest_cost() {
        let (mut ing, _) = ingest(CONFIG);
        let n = 1_000_000u32;
        let payloads: Vec<(String, Vec<u8>)> = (0..2000)
            .map(|i| {
                (
                    format!("sensors/node-{}", i % 50),
                    format!(
                        r#"{{"sensor":"s{i}","value":{}.25,"ts":1764410000123}}"#,
                        i % 97
                    )
                    .into_bytes(),
                )
            })
            .collect();
        let start = std::time::Instant::now();
        let mut total = 0usize;
        for i in 0..n {
            let (topic, payload) = &payloads[i as usize % payloads.len()];
            ing.on_publish(topic, payload, RECEIVED);
            if ing.pending_len() >= BATCH_SIZE {
                total += ing.take_batch().len();
            }
        }
        total += ing.take_batch().len();
        let elapsed = start.elapsed();
        assert_eq!(total, n as usize);
        println!(
            "ingest: {:.0} ns per message",
            elapsed.as_nanos() as f64 / f64::from(n)
        );
    }
}
