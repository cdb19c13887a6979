//! Draining messages too large for the client from a persistent session.
//!
//! Owns [`drain_oversized`]: a short MQTT 3.1.1 connection of its own, made with the source's
//! client id after rumqttc dropped the connection because an incoming packet exceeded its
//! packet limit. It reads every packet as a stream, never holding more than one
//! [`READ_BUFFER`] of it: a PUBLISH above the limit is read to its end and discarded, and
//! acknowledged if QoS 1, so the broker stops redelivering it; smaller PUBLISHes are left
//! unacknowledged, so the broker delivers them again to the source's next connection. It does
//! not decode, count or log (the caller does, with the topics it returns) and does not
//! subscribe (the session keeps the subscriptions).
//!
//! Why (docs/ARCHITECTURE.md §Crate pitfalls, rumqttc): rumqttc checks an incoming packet's
//! length in its fixed header and fails the connection when it is above the limit, before
//! reading it. With a persistent session the broker resends the unacknowledged QoS 1 message
//! on every reconnect (MQTT 3.1.1 §4.4), so one message larger than the limit wedged the source
//! forever (issue 10 item 2). Raising the limit to the protocol's 256 MB would make rumqttc
//! buffer a whole 256 MB packet; reading it as a stream here keeps memory bounded for any size
//! a broker accepts, and only on this rare path.
//!
//! Deviations, documented in README: PUBACKs of a drain connection are not in the order the
//! messages came (MQTT 3.1.1 §4.6; brokers do not depend on it, mosquitto redelivers the
//! skipped ones in order), and QoS 0 messages arriving during the drain (well under a second on
//! a LAN) are lost, as at any reconnect.

use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};

/// Bytes read from the socket at a time; also the most of a drained message held in memory.
pub const READ_BUFFER: usize = 64 * 1024;
/// How long to wait for the TCP connection and the CONNACK.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The drain ends when the broker sends nothing for this long: it has resent what the session
/// held in flight. Also the longest a stalled transfer is waited for.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most packets one drain connection reads. A session resends at most its in-flight window
/// (mosquitto `max_inflight_messages`, MQTT 5 receive maximum ≤ 65,535) before the oversized
/// message; more means a busy session, and the next drain (if any) goes on.
pub const MAX_PACKETS: usize = 65_536;
/// Most oversized messages discarded by one drain connection (each is reported with its topic);
/// further ones are handled by the next drain.
pub const MAX_OVERSIZED: usize = 64;
/// Longest remaining length MQTT can express (§2.2.3: four bytes of seven bits).
pub const MQTT_MAX_REMAINING: usize = 268_435_455;

/// MQTT control packet types (§2.2.1).
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;

/// Who to connect as: the source's broker, client id and credentials.
#[derive(Debug, Clone)]
pub struct DrainTarget<'a> {
    /// Broker host.
    pub host: &'a str,
    /// Broker port.
    pub port: u16,
    /// The source's TLS settings: the drain connects as the source does.
    pub tls: Option<&'a crate::tls::ClientTls>,
    /// The source's client id: the drain takes over its session.
    pub client_id: &'a str,
    /// User name and password, if the broker requires them.
    pub credentials: Option<(&'a str, &'a str)>,
    /// PUBLISH packets with a remaining length above this are discarded (the client's limit).
    pub limit: usize,
}

/// What a drain did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// (topic, packet length) of every oversized message discarded, in order.
    pub oversized: Vec<(String, usize)>,
    /// Messages within the limit, left unacknowledged for the next connection.
    pub left: usize,
    /// Whether the broker kept a session for the client id (MQTT 3.1.1 §3.2.2.2).
    pub session_present: bool,
}

/// Why a drain could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// Connecting, reading or writing failed.
    #[error("drain connection: {0}")]
    Io(#[from] std::io::Error),
    /// The broker did not answer in time.
    #[error("drain connection: no CONNACK within {CONNECT_TIMEOUT:?}")]
    Timeout,
    /// The broker refused the CONNECT (return code, §3.2.2.3).
    #[error("drain connection refused by the broker, return code {0}")]
    Refused(u8),
    /// The broker sent something that is not MQTT 3.1.1.
    #[error("drain connection: malformed packet from the broker: {0}")]
    Malformed(&'static str),
}

/// Connect as `target.client_id` with a persistent session, discard and acknowledge every
/// PUBLISH longer than `target.limit`, and disconnect.
///
/// # Errors
/// When the broker cannot be reached or refuses; what was discarded before an error that came
/// later is lost to the report but was acknowledged, so it is not redelivered.
pub async fn drain_oversized(target: &DrainTarget<'_>) -> Result<Drained, DrainError> {
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((target.host, target.port)),
    )
    .await
    .map_err(|_| DrainError::Timeout)??;
    let _ = stream.set_nodelay(true);
    match target.tls {
        None => drain_stream(stream, target).await,
        Some(tls) => {
            let name = tls.server_name_for(target.host)?;
            let stream = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(tls.rustls()).connect(name, stream),
            )
            .await
            .map_err(|_| DrainError::Timeout)??;
            drain_stream(stream, target).await
        }
    }
}

/// [`drain_oversized`] over any byte stream (tests use an in-memory one).
pub(crate) async fn drain_stream<S>(
    stream: S,
    target: &DrainTarget<'_>,
) -> Result<Drained, DrainError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::with_capacity(READ_BUFFER, read);
    write.write_all(&connect_packet(target)).await?;
    write.flush().await?;
    let mut out = Drained::default();
    let (first, len) = tokio::time::timeout(CONNECT_TIMEOUT, fixed_header(&mut read))
        .await
        .map_err(|_| DrainError::Timeout)??;
    if first >> 4 != CONNACK || len != 2 {
        return Err(DrainError::Malformed("expected CONNACK"));
    }
    let mut ack = [0u8; 2];
    read.read_exact(&mut ack).await?;
    if ack[1] != 0 {
        return Err(DrainError::Refused(ack[1]));
    }
    out.session_present = ack[0] & 1 == 1;
    for _ in 0..MAX_PACKETS {
        let Ok(header) = tokio::time::timeout(IDLE_TIMEOUT, fixed_header(&mut read)).await else {
            break; // Idle: the broker resent what it had in flight.
        };
        let (first, len) = header?;
        if first >> 4 != PUBLISH {
            // PINGRESP and the like: nothing to do (keep-alive is off, so none is expected).
            discard(&mut read, len).await?;
            continue;
        }
        if len <= target.limit {
            discard(&mut read, len).await?;
            out.left += 1;
            if !out.oversized.is_empty() {
                // The oversized message is gone; the source takes it from here.
                break;
            }
            continue;
        }
        // §3.3.1.2: QoS in bits 2-1 of the first byte; §3.3.2: topic, then the packet id if
        // QoS > 0. The subscriptions are QoS 0 or 1, so delivery is never QoS 2 (§3.8.4).
        let qos = (first >> 1) & 0b11;
        let topic_len = usize::from(read_u16(&mut read).await?);
        let id_len = if qos > 0 { 2 } else { 0 };
        let Some(rest) = len.checked_sub(2 + topic_len + id_len) else {
            return Err(DrainError::Malformed("PUBLISH shorter than its topic"));
        };
        let mut topic = vec![0u8; topic_len];
        idle(read.read_exact(&mut topic)).await?;
        let id = if qos > 0 {
            Some(read_u16(&mut read).await?)
        } else {
            None
        };
        discard(&mut read, rest).await?;
        if let (1, Some(id)) = (qos, id) {
            let [hi, lo] = id.to_be_bytes();
            // PUBACK (§3.4): type 4, remaining length 2, the packet id.
            write.write_all(&[0x40, 0x02, hi, lo]).await?;
            write.flush().await?;
        }
        out.oversized
            .push((String::from_utf8_lossy(&topic).into_owned(), len));
        if out.oversized.len() >= MAX_OVERSIZED {
            break;
        }
    }
    // DISCONNECT (§3.14): the session (clean session 0) is kept for the source.
    write.write_all(&[0xE0, 0x00]).await?;
    write.flush().await?;
    // Close gracefully: send FIN, then read (and discard) until the broker closes its side
    // (§3.14.4: on DISCONNECT the server closes the connection). Dropping a socket with unread
    // data makes the kernel send RST, and a broker that has not yet read our PUBACK loses it
    // with the reset: the oversized message would then be delivered, and counted, again.
    let _ = write.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Ok(n) = read.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(out)
}

/// Longest wait for the broker to close its side after our DISCONNECT.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A read that fails when the broker stalls for [`IDLE_TIMEOUT`].
async fn idle<T>(
    read: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(IDLE_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "broker stalled"))?
}

async fn read_u16<R: AsyncRead + Unpin>(read: &mut R) -> std::io::Result<u16> {
    idle(read.read_u16()).await
}

/// The first byte and the remaining length of the next packet (§2.2.3).
async fn fixed_header<R: AsyncRead + Unpin>(read: &mut R) -> Result<(u8, usize), DrainError> {
    let first = read.read_u8().await?;
    let mut len = 0usize;
    // At most four length bytes (§2.2.3); the loop is bounded by it.
    for shift in [0u32, 7, 14, 21] {
        let byte = idle(read.read_u8()).await?;
        len |= usize::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok((first, len));
        }
    }
    Err(DrainError::Malformed(
        "remaining length longer than four bytes",
    ))
}

/// Read and drop `n` bytes, a buffer at a time.
async fn discard<R: AsyncBufRead + Unpin>(read: &mut R, mut n: usize) -> std::io::Result<()> {
    // Bounded: every pass consumes at least one byte of `n` or fails.
    while n > 0 {
        let available = idle(read.fill_buf()).await?.len();
        if available == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let take = available.min(n);
        read.consume(take);
        n -= take;
    }
    Ok(())
}

/// Append the remaining length `n` (§2.2.3).
fn push_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        // The low seven bits, as a byte (the mask makes the cast exact).
        #[allow(clippy::cast_possible_truncation)]
        let mut byte = (n & 0x7F) as u8;
        n >>= 7;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

/// Append an MQTT string or binary field: two length bytes, then the bytes (§1.5.3). Longer
/// fields are cut at 65,535 bytes (validation refuses such client ids).
fn push_field(out: &mut Vec<u8>, s: &[u8]) {
    let s = &s[..s.len().min(usize::from(u16::MAX))];
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT (§3.1) with clean session 0 and keep-alive 0 (off, §3.1.2.10: the drain is short
/// and bounds its own waits).
fn connect_packet(target: &DrainTarget<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    push_field(&mut body, b"MQTT");
    body.push(4); // Protocol level 4 = 3.1.1 (§3.1.2.2).
    let mut flags = 0u8; // Clean session 0 (bit 1): take over the source's session.
    if target.credentials.is_some() {
        flags |= 0x80 | 0x40; // User name and password (§3.1.2.8, §3.1.2.9).
    }
    body.push(flags);
    body.extend_from_slice(&0u16.to_be_bytes());
    push_field(&mut body, target.client_id.as_bytes());
    if let Some((user, password)) = target.credentials {
        push_field(&mut body, user.as_bytes());
        push_field(&mut body, password.as_bytes());
    }
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(CONNECT << 4);
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(limit: usize) -> DrainTarget<'static> {
        DrainTarget {
            host: "127.0.0.1",
            port: 1,
            tls: None,
            client_id: "gw",
            credentials: Some(("u", "p")),
            limit,
        }
    }

    fn publish(topic: &str, qos: u8, id: u16, payload_len: usize) -> Vec<u8> {
        let mut body = Vec::new();
        push_field(&mut body, topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&id.to_be_bytes());
        }
        body.resize(body.len() + payload_len, b'x');
        let mut out = vec![(PUBLISH << 4) | (qos << 1)];
        push_len(&mut out, body.len());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn lengths_encode_as_in_the_spec_examples() {
        // MQTT 3.1.1 §2.2.3, table 2.4: the boundaries of one to four bytes.
        for (n, bytes) in [
            (0, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (MQTT_MAX_REMAINING, vec![0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = Vec::new();
            push_len(&mut out, n);
            assert_eq!(out, bytes, "{n}");
        }
        assert_eq!(
            connect_packet(&target(10)),
            [
                0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC0, 0, 0, 0, 2, b'g', b'w', 0, 1,
                b'u', 0, 1, b'p'
            ]
        );
    }

    /// A fake broker on an in-memory pipe: checks the CONNECT, answers CONNACK, sends `then`,
    /// and returns what the client sent after its CONNECT.
    async fn run(then: Vec<u8>, limit: usize) -> (Drained, Vec<u8>) {
        let (client, mut broker) = tokio::io::duplex(READ_BUFFER);
        let broker = tokio::spawn(async move {
            let connect = connect_packet(&target(limit));
            let mut got = vec![0u8; connect.len()];
            broker.read_exact(&mut got).await.expect("connect");
            assert_eq!(got, connect);
            broker
                .write_all(&[0x20, 0x02, 0x01, 0x00])
                .await
                .expect("connack");
            // Written from a task of its own: the pipe holds only READ_BUFFER bytes, so the
            // 3 MB message goes through only if the client reads it as it comes.
            let (mut r, mut w) = tokio::io::split(broker);
            let writer = tokio::spawn(async move {
                // Fails once the client has gone, with the rest unread: as intended.
                let _ = w.write_all(&then).await;
                w
            });
            let mut sent = Vec::new();
            r.read_to_end(&mut sent).await.expect("read");
            drop(writer.await);
            sent
        });
        let drained = drain_stream(client, &target(limit)).await.expect("drain");
        let sent = broker.await.expect("broker");
        (drained, sent)
    }

    #[tokio::test]
    async fn an_oversized_message_is_discarded_as_a_stream_and_acknowledged() {
        let limit = 1024;
        let mut stream = publish("a/small", 1, 7, 10);
        stream.extend(publish("a/big", 1, 8, 3 * 1024 * 1024));
        stream.extend(publish("a/after", 1, 9, 10));
        stream.extend(publish("a/never-read", 1, 10, 10));
        let (drained, sent) = run(stream, limit).await;
        assert_eq!(
            drained,
            Drained {
                oversized: vec![("a/big".to_owned(), 2 + 5 + 2 + 3 * 1024 * 1024)],
                left: 2,
                session_present: true,
            }
        );
        // One PUBACK, for packet 8 only; then DISCONNECT. Small ones stay unacknowledged.
        assert_eq!(sent, [0x40, 0x02, 0x00, 0x08, 0xE0, 0x00]);
    }

    #[tokio::test]
    async fn an_idle_broker_ends_the_drain_and_qos0_is_not_acknowledged() {
        let mut stream = publish("a/big0", 0, 0, 5000);
        stream.extend(publish("a/big1", 1, 300, 5000));
        let (drained, sent) = run(stream, 1000).await;
        assert_eq!(
            drained.oversized,
            [("a/big0".to_owned(), 5008), ("a/big1".to_owned(), 5010)]
        );
        assert_eq!(sent, [0x40, 0x02, 0x01, 0x2C, 0xE0, 0x00]);
    }
}

/// The drain connection over TLS, against a real mosquitto's TLS listener: it connects as the
/// source does (same `tls` table) and discards the oversized message of the session; with
/// another CA it is refused before anything is read.
#[cfg(test)]
mod tls_tests {
    use std::time::Duration;

    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    use super::{drain_oversized, DrainTarget};
    use crate::config::Problems;
    use crate::sinks::mqtt::tests::Broker;
    use crate::tls::tests::TestPki;
    use crate::tls::TlsConfig;

    /// Connect with `options`, subscribe to `filter` or publish `publish` (QoS 1), and return
    /// once the broker acknowledged it (10 s at most).
    async fn session(options: MqttOptions, filter: Option<&str>, publish: Option<(&str, Vec<u8>)>) {
        let (client, mut el) = AsyncClient::new(options, 10);
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match el.poll().await.expect("connection") {
                    Event::Incoming(Packet::ConnAck(_)) => {
                        if let Some(f) = filter {
                            client.subscribe(f, QoS::AtLeastOnce).await.expect("sub");
                        }
                        if let Some((topic, payload)) = &publish {
                            client
                                .publish(*topic, QoS::AtLeastOnce, false, payload.clone())
                                .await
                                .expect("publish");
                        }
                    }
                    Event::Incoming(Packet::SubAck(_) | Packet::PubAck(_)) => break,
                    _ => {}
                }
            }
        })
        .await
        .expect("done within 10 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_drain_connects_over_tls_as_the_source_does() {
        const BIG: usize = 2 * 1024 * 1024;
        let pki = TestPki::new();
        let broker = Broker::start_with_tls(&pki);
        let (tls_port, _) = broker.tls_port.clone().expect("tls listener");
        // The source's persistent session, then a message above its limit while it is away.
        let mut source = MqttOptions::new("gw-drain", "127.0.0.1", broker.port);
        source.set_clean_session(false);
        session(source, Some("big/#"), None).await;
        let mut publisher = MqttOptions::new("big-pub", "127.0.0.1", broker.port);
        publisher.set_max_packet_size(2 * BIG, 2 * BIG);
        session(publisher, None, Some(("big/1", vec![b' '; BIG]))).await;

        let tls = |ca: std::path::PathBuf| {
            let mut p = Problems::default();
            TlsConfig {
                ca_file: ca,
                cert_file: None,
                key_file: None,
                server_name: None,
            }
            .validate("mqtt[0].tls", &mut p)
            .expect("valid")
        };
        let other = TestPki::new();
        let wrong = tls(other.path("ca.pem"));
        let target = |tls| DrainTarget {
            host: "127.0.0.1",
            port: tls_port,
            tls,
            client_id: "gw-drain",
            credentials: None,
            limit: 1024 * 1024,
        };
        assert!(
            drain_oversized(&target(Some(&wrong))).await.is_err(),
            "drained through a broker of another CA"
        );
        let right = tls(pki.path("ca.pem"));
        let drained = drain_oversized(&target(Some(&right)))
            .await
            .expect("drain over TLS");
        assert!(drained.session_present);
        assert_eq!(drained.oversized.len(), 1, "{drained:?}");
        assert_eq!(drained.oversized[0].0, "big/1");
        assert!(drained.oversized[0].1 > BIG);
    }
}
