//! MQTT publishing of the simulated nodes (rumqttc, plain TCP, QoS 1).
//!
//! Owns the broker connection, its reconnect backoff and the exact moment a message becomes
//! truth: when the broker's PUBACK for it arrives. Messages go out one at a time (one QoS 1
//! publish in flight), so each PUBACK maps to exactly one message without relying on rumqttc's
//! packet-id bookkeeping, which silently drops queued publishes on a new session
//! (docs/ARCHITECTURE.md §Crate pitfalls). A message whose connection breaks before its PUBACK is
//! sent again after the reconnect (a broker may then hold it twice; same value and time, so
//! harmless). It builds no payloads ([`crate::nodes`], [`crate::messages`]).
//!
//! Last wills: a node with a will gets a connection of its own (a will belongs to one MQTT
//! connection, MQTT 3.1.1 §3.1.2.5), set up with the will at QoS 1. [`Publisher::set_connected`]
//! with `false` drops that connection's socket without a DISCONNECT, which is what a node losing
//! power or radio does, so the broker publishes the will; `true` reconnects, and the node's
//! optional online message goes out at QoS 0 after each CONNACK (QoS 0 has no PUBACK, so the
//! one-message-one-PUBACK bookkeeping above is untouched).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, LastWill, MqttOptions, Packet, QoS,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::fault::MAX_OVERSIZED_BYTES;
use crate::scenario::Will;
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
/// On shutdown, how long a message already published may still wait for its PUBACK before the
/// publisher stops (then it is not in the truth; the broker may or may not have it).
pub const SHUTDOWN_ACK_WAIT: Duration = Duration::from_secs(5);
/// Largest packet either way: the largest oversized payload a fault may send, plus room for the
/// topic and header.
const MAX_PACKET: usize = MAX_OVERSIZED_BYTES + 64 * 1024;

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
    /// Messages queued for publishing (every connection).
    pub queued: AtomicU64,
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
    control: mpsc::UnboundedSender<Control>,
}

/// Orders to the connection task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    /// Close the socket without DISCONNECT and stay away.
    Drop,
    /// Connect again.
    Restore,
}

impl Publisher {
    /// Queues a message without waiting; a full queue drops it (counted and logged).
    pub fn send(&self, msg: Outgoing) {
        if let Err(e) = self.tx.try_send(msg) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "mqtt outgoing queue full or closed; message dropped");
        } else {
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &PublishStats {
        &self.stats
    }

    /// `false` drops the connection abruptly (the broker then publishes the will, if any) and
    /// keeps it down; `true` connects again.
    pub fn set_connected(&self, up: bool) {
        let c = if up { Control::Restore } else { Control::Drop };
        if self.control.send(c).is_err() {
            tracing::debug!("mqtt connection task gone; connection order ignored");
        }
    }
}

/// What the connection task tells the publishing task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    Down,
    Acked,
}

/// One broker connection to open.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// Broker address.
    pub broker: SocketAddr,
    /// MQTT client id.
    pub client_id: &'a str,
    /// The node's last will, for a node's own connection.
    pub will: Option<&'a Will>,
}

/// Starts the connection and publishing tasks on `tasks`; both stop on `cancel`. Counters go to
/// `stats` (shared by all connections of a site).
pub fn start(
    conn: Connection<'_>,
    truth: Arc<Truth>,
    stats: Arc<PublishStats>,
    cancel: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Publisher {
    let broker = conn.broker;
    let mut options = MqttOptions::new(conn.client_id, broker.ip().to_string(), broker.port());
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some(w) = conn.will {
        options.set_last_will(LastWill::new(
            w.topic.clone(),
            w.payload.clone().into_bytes(),
            QoS::AtLeastOnce,
            w.retain,
        ));
    }
    let online = conn.will.and_then(|w| {
        w.online_payload
            .clone()
            .map(|p| (w.topic.clone(), p.into_bytes(), w.retain))
    });
    let (client, eventloop) = AsyncClient::new(options, CLIENT_CAPACITY);
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (tx, rx) = mpsc::channel(OUTGOING_CAPACITY);
    tasks.spawn(drive(
        eventloop,
        Driver {
            client: client.clone(),
            link: link_tx,
            control: control_rx,
            broker,
            online,
        },
        cancel.clone(),
    ));
    tasks.spawn(publish(
        client,
        rx,
        link_rx,
        truth,
        Arc::clone(&stats),
        cancel.clone(),
    ));
    Publisher {
        tx,
        stats,
        control: control_tx,
    }
}

/// What the connection task works with besides its event loop.
struct Driver {
    client: AsyncClient,
    link: mpsc::UnboundedSender<Link>,
    control: mpsc::UnboundedReceiver<Control>,
    broker: SocketAddr,
    /// Online message: topic, payload, retain.
    online: Option<(String, Vec<u8>, bool)>,
}

/// Polls the event loop: reports connection state and PUBACKs, backs off after errors, drops
/// and restores the connection on order.
async fn drive(mut eventloop: EventLoop, mut d: Driver, cancel: CancellationToken) {
    let broker = d.broker;
    let link = d.link.clone();
    let mut backoff = MIN_BACKOFF;
    let mut was_up = false;
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return,
            c = d.control.recv() => {
                match c {
                    Some(Control::Drop) => {
                        // No DISCONNECT: the socket just closes, as when a node loses power.
                        eventloop.clean();
                        was_up = false;
                        let _ = link.send(Link::Down);
                        tracing::info!(%broker, "mqtt connection dropped (last will due)");
                        loop {
                            match tokio::select! { () = cancel.cancelled() => None, c = d.control.recv() => c } {
                                Some(Control::Restore) => break,
                                Some(Control::Drop) => {}
                                None => return,
                            }
                        }
                    }
                    Some(Control::Restore) => {}
                    None => return,
                }
                continue;
            }
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                tracing::info!(%broker, "mqtt connected");
                backoff = MIN_BACKOFF;
                was_up = true;
                if let Some((topic, payload, retain)) = &d.online {
                    if let Err(e) = d.client.try_publish(
                        topic.clone(),
                        QoS::AtMostOnce,
                        *retain,
                        payload.clone(),
                    ) {
                        tracing::warn!(error = %e, "online message not queued");
                    }
                }
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
            // Connection changes that happened while idle (a node's connection dropped and
            // restored between two messages): without this, a stale Down/Up pair read after the
            // publish would send the message twice.
            while let Ok(l) = link.try_recv() {
                match l {
                    Link::Up => up = true,
                    Link::Down => {
                        up = false;
                        stale_acks = 0;
                    }
                    Link::Acked => stale_acks = stale_acks.saturating_sub(1),
                }
            }
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
            // Cancelled while this message is out: wait (bounded) for its PUBACK, so that a
            // message the broker took is recorded in the truth (the gateway receives it) even
            // when the site shuts down right after publishing.
            let mut draining = false;
            loop {
                let l = tokio::select! {
                    () = cancel.cancelled(), if !draining => {
                        draining = true;
                        deadline
                            .as_mut()
                            .reset(tokio::time::Instant::now() + SHUTDOWN_ACK_WAIT);
                        continue;
                    }
                    () = &mut deadline => {
                        if draining {
                            return;
                        }
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
                        if draining {
                            return;
                        }
                        break 'send;
                    }
                    Some(Link::Down) if draining => return,
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
