//! MQTT publishing of the simulated nodes (rumqttc, plain TCP, QoS 1).
//!
//! Owns the broker connection, its reconnect backoff and the exact moment a message becomes
//! truth: when the broker's PUBACK for it arrives. Messages go out one at a time (one QoS 1
//! publish in flight), so each PUBACK maps to exactly one message without relying on rumqttc's
//! packet-id bookkeeping, which silently drops queued publishes on a new session (crates.md).
//! A message whose connection breaks before its PUBACK is sent again after the reconnect (a
//! broker may then hold it twice; same value and time, so harmless). It builds no payloads
//! ([`crate::nodes`], [`crate::messages`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::truth::{TrueSample, Truth};

/// Messages waiting to be published; beyond this, new ones are dropped (counted, not truth).
pub const OUTGOING_CAPACITY: usize = 4096;
/// rumqttc request channel size (we keep one publish in flight, so it stays nearly empty).
const CLIENT_CAPACITY: usize = 16;
/// MQTT keep-alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// First wait after a connection error.
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between reconnect attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait for a PUBACK before the message is sent again.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest packet either way (CIGEM JSON is at most 64 KiB by its length field).
const MAX_PACKET: usize = 256 * 1024;

/// One message to publish and the truth it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Values in the payload, recorded once the broker acknowledged it.
    pub truth: Vec<TrueSample>,
}

/// Counters of the publisher.
#[derive(Debug, Default)]
pub struct PublishStats {
    /// Messages acknowledged by the broker.
    pub acked: AtomicU64,
    /// Messages sent again after a broken connection or a missing PUBACK.
    pub resent: AtomicU64,
    /// Messages dropped because the outgoing queue was full.
    pub dropped: AtomicU64,
}

/// Handle to the running publisher.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Outgoing>,
    stats: Arc<PublishStats>,
}

impl Publisher {
    /// Queues a message without waiting; a full queue drops it (counted and logged).
    pub fn send(&self, msg: Outgoing) {
        if let Err(e) = self.tx.try_send(msg) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "mqtt outgoing queue full or closed; message dropped");
        }
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &PublishStats {
        &self.stats
    }
}

/// What the connection task tells the publishing task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    Down,
    Acked,
}

/// Starts the connection and publishing tasks on `tasks`; both stop on `cancel`.
pub fn start(
    broker: SocketAddr,
    client_id: &str,
    truth: Arc<Truth>,
    cancel: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Publisher {
    let mut options = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    let (client, eventloop) = AsyncClient::new(options, CLIENT_CAPACITY);
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    let (tx, rx) = mpsc::channel(OUTGOING_CAPACITY);
    let stats = Arc::new(PublishStats::default());
    tasks.spawn(drive(eventloop, link_tx, broker, cancel.clone()));
    tasks.spawn(publish(
        client,
        rx,
        link_rx,
        truth,
        Arc::clone(&stats),
        cancel.clone(),
    ));
    Publisher { tx, stats }
}

/// Polls the event loop: reports connection state and PUBACKs, backs off after errors.
async fn drive(
    mut eventloop: EventLoop,
    link: mpsc::UnboundedSender<Link>,
    broker: SocketAddr,
    cancel: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    let mut was_up = false;
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                tracing::info!(%broker, "mqtt connected");
                backoff = MIN_BACKOFF;
                was_up = true;
                let _ = link.send(Link::Up);
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                let _ = link.send(Link::Acked);
            }
            Ok(_) => {}
            Err(e) => {
                if was_up {
                    tracing::warn!(%broker, error = %e, "mqtt connection lost");
                } else {
                    tracing::debug!(%broker, error = %e, "mqtt connect failed");
                }
                was_up = false;
                let _ = link.send(Link::Down);
                // rumqttc reconnects on the next poll; without a pause it would spin.
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Publishes queued messages one at a time, recording truth on each PUBACK.
async fn publish(
    client: AsyncClient,
    mut rx: mpsc::Receiver<Outgoing>,
    mut link: mpsc::UnboundedReceiver<Link>,
    truth: Arc<Truth>,
    stats: Arc<PublishStats>,
    cancel: CancellationToken,
) {
    let mut up = false;
    // PUBACKs still due for earlier attempts (a publish resent after a PUBACK timeout may be
    // acknowledged twice); they are skipped so no ack is credited to the wrong message.
    let mut stale_acks = 0_u32;
    loop {
        let msg = tokio::select! {
            () = cancel.cancelled() => break,
            m = rx.recv() => match m { Some(m) => m, None => break },
        };
        let mut attempt = 0_u32;
        // Publishes of this message on the current connection not yet acknowledged.
        let mut outstanding = 0_u32;
        'send: loop {
            while !up {
                match tokio::select! { () = cancel.cancelled() => None, l = link.recv() => l } {
                    Some(Link::Up) => up = true,
                    Some(_) => {}
                    None => return,
                }
            }
            if attempt > 0 {
                stats.resent.fetch_add(1, Ordering::Relaxed);
            }
            attempt += 1;
            if let Err(e) = client
                .publish(
                    msg.topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    msg.payload.clone(),
                )
                .await
            {
                tracing::error!(error = %e, "mqtt client closed; publisher stopped");
                return;
            }
            outstanding += 1;
            let deadline = tokio::time::sleep(ACK_TIMEOUT);
            tokio::pin!(deadline);
            loop {
                let l = tokio::select! {
                    () = cancel.cancelled() => return,
                    () = &mut deadline => {
                        tracing::warn!(topic = %msg.topic, "no PUBACK in time; sending again");
                        continue 'send;
                    }
                    l = link.recv() => l,
                };
                match l {
                    Some(Link::Acked) if stale_acks > 0 => stale_acks -= 1,
                    Some(Link::Acked) => {
                        stale_acks = outstanding - 1;
                        truth.record(msg.truth.iter().cloned());
                        stats.acked.fetch_add(1, Ordering::Relaxed);
                        break 'send;
                    }
                    Some(Link::Down) => {
                        // A new (clean) session: nothing of the old one will be acknowledged.
                        up = false;
                        outstanding = 0;
                        stale_acks = 0;
                        continue 'send;
                    }
                    Some(Link::Up) => up = true,
                    None => return,
                }
            }
        }
    }
    let _ = client.try_disconnect();
}
