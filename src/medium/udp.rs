//! The medium on one blocking UDP socket: no thread, no background work.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::dedup::{Dedup, Verdict};
use super::frame::{self, FrameError, MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES, MIN_KEY_BYTES};
use super::health::LinkHealth;
use super::MediumError;

/// Default local UDP port.
pub const DEFAULT_PORT: u16 = 7940;
/// Default link timeout.
pub const DEFAULT_LINK_TIMEOUT_MS: u64 = 2000;

/// What a medium needs: who we are, the key, and one peer address per link.
#[derive(Clone, Default)]
pub struct MediumConfig {
    /// This node's name (sent in every frame; frames with it are our own).
    pub node: Option<String>,
    /// The cluster key (at least 16 bytes).
    pub key: Option<Vec<u8>>,
    /// Local UDP port (all links); [`DEFAULT_PORT`] if unset.
    pub port: Option<u16>,
    /// One peer address per link (`10.0.1.2:7940`); port 0 means the local
    /// port (every node on the same port).
    pub links: Vec<SocketAddr>,
    /// A link is down after this long without an authentic frame.
    pub link_timeout_ms: Option<u64>,
}

impl std::fmt::Debug for MediumConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediumConfig")
            .field("node", &self.node)
            .field("key", &self.key.as_ref().map(|_| "<secret>"))
            .field("port", &self.port)
            .field("links", &self.links)
            .field("link_timeout_ms", &self.link_timeout_ms)
            .finish()
    }
}

impl MediumConfig {
    /// Read the key from a file that only its owner may read (like
    /// `authkeys`); one trailing newline is not part of the key.
    pub fn set_key_file(&mut self, path: &Path) -> Result<(), MediumError> {
        use std::os::unix::fs::PermissionsExt as _;
        let fail = |why: String| MediumError::KeyFile {
            path: path.to_path_buf(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(fail(format!(
                "mode {:o} lets others read it; chmod 600 it",
                meta.permissions().mode() & 0o777
            )));
        }
        let mut key = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        if key.last() == Some(&b'\n') {
            key.pop();
        }
        if key.len() < MIN_KEY_BYTES {
            return Err(fail(format!(
                "the key is {} bytes; at least {MIN_KEY_BYTES} are needed",
                key.len()
            )));
        }
        self.key = Some(key);
        Ok(())
    }
}

/// Counters since the medium was opened (per process: after a fork each
/// child counts its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediumStats {
    /// Payloads sent (each on every link).
    pub sent: u64,
    /// Sends that failed on one link.
    pub send_errors: u64,
    /// Payloads delivered.
    pub delivered: u64,
    /// Copies of an already delivered payload (from the other links).
    pub duplicates: u64,
    /// Frames that failed authentication.
    pub auth_failures: u64,
    /// Datagrams that are no frame of ours.
    pub malformed: u64,
    /// Replayed frames (older incarnation or sequence number).
    pub replays: u64,
    /// Datagrams from an address that is no configured link.
    pub unknown_source: u64,
}

/// A redundant authenticated medium on one UDP socket.
#[derive(Debug)]
pub struct UdpMedium {
    socket: UdpSocket,
    node: String,
    key: Vec<u8>,
    links: Vec<SocketAddr>,
    health: Vec<LinkHealth>,
    incarnation: u64,
    next_seq: u64,
    dedup: Dedup,
    origin: Instant,
    stats: MediumStats,
    buffer: Vec<u8>,
}

impl UdpMedium {
    /// Bind the socket. Starts no thread.
    pub fn open(config: &MediumConfig) -> Result<Self, MediumError> {
        let node = config
            .node
            .clone()
            .ok_or_else(|| MediumError::Config("no node name set".into()))?;
        if node.is_empty() || node.len() > frame::MAX_NAME_BYTES {
            return Err(MediumError::Config(format!(
                "node name {node:?} must be 1 to {} bytes",
                frame::MAX_NAME_BYTES
            )));
        }
        let key = config
            .key
            .clone()
            .ok_or_else(|| MediumError::Config("no key set".into()))?;
        if key.len() < MIN_KEY_BYTES {
            return Err(MediumError::Config(format!(
                "key of {} bytes is too short; at least {MIN_KEY_BYTES} are needed",
                key.len()
            )));
        }
        if config.links.is_empty() {
            return Err(MediumError::Config("no link configured".into()));
        }
        let port = config.port.unwrap_or(DEFAULT_PORT);
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        let links: Vec<SocketAddr> = config
            .links
            .iter()
            .map(|l| {
                let mut l = *l;
                if l.port() == 0 {
                    l.set_port(port);
                }
                l
            })
            .collect();
        let socket = UdpSocket::bind(addr).map_err(|source| MediumError::Bind { addr, source })?;
        let timeout = config.link_timeout_ms.unwrap_or(DEFAULT_LINK_TIMEOUT_MS);
        // Wall-clock nanoseconds: grows across restarts of the process (as
        // long as the clock does), so peers can tell a restart from a replay.
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Ok(Self {
            socket,
            node,
            key,
            health: vec![LinkHealth::new(timeout); links.len()],
            links,
            incarnation,
            next_seq: 1,
            dedup: Dedup::new(),
            origin: Instant::now(),
            stats: MediumStats::default(),
            buffer: vec![0; MAX_FRAME_BYTES + 1],
        })
    }

    /// The configured links (peer addresses), in order.
    pub fn links(&self) -> &[SocketAddr] {
        &self.links
    }

    /// Counters.
    pub fn stats(&self) -> MediumStats {
        self.stats
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Send `payload` on every link. Succeeds if at least one link took it.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), MediumError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(MediumError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        let seq = self.next_seq;
        let Some(bytes) = frame::encode(&self.key, &self.node, self.incarnation, seq, payload)
        else {
            return Err(MediumError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        };
        self.next_seq += 1;
        let mut last_error = None;
        let mut sent_any = false;
        for link in &self.links {
            match self.socket.send_to(&bytes, link) {
                Ok(_) => sent_any = true,
                Err(e) => {
                    self.stats.send_errors += 1;
                    last_error = Some(e);
                }
            }
        }
        match (sent_any, last_error) {
            (true, _) => {
                self.stats.sent += 1;
                Ok(())
            }
            (false, Some(source)) => Err(MediumError::SendFailed {
                links: self.links.len(),
                source,
            }),
            (false, None) => Ok(()),
        }
    }

    /// Wait up to `timeout` for the next fresh payload and copy it into
    /// `out`; `Ok(None)` on timeout, [`MediumError::Interrupted`] when a
    /// signal arrives first. Duplicates, replays, forgeries and
    /// strangers are counted and skipped.
    pub fn recv(
        &mut self,
        out: &mut [u8],
        timeout: Duration,
    ) -> Result<Option<usize>, MediumError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket
                .set_read_timeout(Some(left))
                .map_err(MediumError::Receive)?;
            let (len, from) = match self.socket.recv_from(&mut self.buffer) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                // Let the caller handle the signal (Heartbeat's read child
                // processes its pending signals between reads).
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    return Err(MediumError::Interrupted)
                }
                Err(e) => return Err(MediumError::Receive(e)),
            };
            let Some(link) = self.links.iter().position(|l| l.ip() == from.ip()) else {
                self.stats.unknown_source += 1;
                continue;
            };
            let now = self.now_ms();
            let f = match frame::decode(&self.key, &self.buffer[..len]) {
                Ok(f) => f,
                Err(FrameError::Authentication) => {
                    self.stats.auth_failures += 1;
                    continue;
                }
                Err(_) => {
                    self.stats.malformed += 1;
                    continue;
                }
            };
            if f.sender == self.node {
                continue; // our own frame, looped back
            }
            match self.dedup.check(f.sender, f.incarnation, f.seq) {
                Verdict::Replay => {
                    self.stats.replays += 1;
                }
                Verdict::Duplicate => {
                    self.health[link].heard(now);
                    self.stats.duplicates += 1;
                }
                Verdict::Fresh => {
                    self.health[link].heard(now);
                    let payload = f.payload;
                    if payload.len() > out.len() {
                        return Err(MediumError::BufferTooSmall {
                            len: payload.len(),
                            capacity: out.len(),
                        });
                    }
                    out[..payload.len()].copy_from_slice(payload);
                    self.stats.delivered += 1;
                    return Ok(Some(payload.len()));
                }
            }
        }
    }

    /// Whether link `index` is up now (`None` for an index out of range).
    pub fn link_up(&self, index: usize) -> Option<bool> {
        let now = self.now_ms();
        self.health.get(index).map(|h| h.is_up(now))
    }

    /// Milliseconds since link `index` last carried an authentic frame.
    pub fn link_silent_ms(&self, index: usize) -> Option<u64> {
        let now = self.now_ms();
        self.health.get(index).and_then(|h| h.silent_for_ms(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(port_a: u16, port_b: u16, links: usize) -> (UdpMedium, UdpMedium) {
        // On loopback every datagram comes from 127.0.0.1, so the links all
        // name that address: each frame goes out `links` times, and arrives
        // on link 0 (the namespace tests give each link its own subnet).
        let cfg = |node: &str, port: u16, peer_port: u16| MediumConfig {
            node: Some(node.into()),
            key: Some(b"a key of at least sixteen bytes".to_vec()),
            port: Some(port),
            links: (0..links)
                .map(|_| format!("127.0.0.1:{peer_port}").parse().unwrap())
                .collect(),
            link_timeout_ms: Some(500),
        };
        (
            UdpMedium::open(&cfg("a", port_a, port_b)).unwrap(),
            UdpMedium::open(&cfg("b", port_b, port_a)).unwrap(),
        )
    }

    #[test]
    fn payload_sent_on_two_links_is_delivered_once() {
        let (mut a, mut b) = pair(47_941, 47_942, 2);
        a.send(b"one").unwrap();
        a.send(b"two").unwrap();
        let mut buf = [0u8; 64];
        let n = b.recv(&mut buf, Duration::from_secs(2)).unwrap().unwrap();
        assert_eq!(&buf[..n], b"one");
        let n = b.recv(&mut buf, Duration::from_secs(2)).unwrap().unwrap();
        assert_eq!(&buf[..n], b"two");
        assert_eq!(b.recv(&mut buf, Duration::from_millis(200)).unwrap(), None);
        let s = b.stats();
        assert_eq!((s.delivered, s.duplicates), (2, 2));
        assert_eq!(b.link_up(0), Some(true));
        assert_eq!(b.link_up(2), None);
    }

    #[test]
    fn wrong_key_frames_are_counted_not_delivered() {
        let (_, mut b) = pair(47_943, 47_944, 1);
        let mut other = UdpMedium::open(&MediumConfig {
            node: Some("x".into()),
            key: Some(b"some other sixteen-byte key".to_vec()),
            port: Some(47_945),
            links: vec!["127.0.0.1:47944".parse().unwrap()],
            link_timeout_ms: None,
        })
        .unwrap();
        other.send(b"forged").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(b.recv(&mut buf, Duration::from_millis(300)).unwrap(), None);
        assert_eq!(b.stats().auth_failures, 1);
        assert_eq!(b.link_up(0), Some(false), "a forgery is no sign of life");
    }

    #[test]
    fn incomplete_configuration_is_refused_with_the_reason() {
        let err = UdpMedium::open(&MediumConfig::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid medium configuration: no node name set"
        );
        let err = UdpMedium::open(&MediumConfig {
            node: Some("a".into()),
            key: Some(b"short".to_vec()),
            ..MediumConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("too short"), "{err}");
    }
}
