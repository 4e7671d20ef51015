//! Byte transports for the migration stream, and clocks.
//!
//! - [`SimLink`]: a simulated link on virtual time. Sending `n` bytes takes
//!   `n × 8 / bandwidth` of the sender's clock (the sender is link-bound),
//!   bytes arrive `latency` later at the peer, which runs on its own clock;
//!   replies come back `latency` after the peer sent them. Faults can be
//!   injected at exact byte offsets ([`SimFaults`]).
//! - [`TcpTransport`]: a real TCP stream with a timeout on every read and
//!   every write.

use std::io::{IoSlice, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::backend::sim::VirtualClock;

/// A source of time in nanoseconds since some start.
pub trait Clock {
    /// Now.
    fn now_ns(&self) -> u64;

    /// Wait until `t_ns` (return at once if it has passed).
    fn sleep_until(&self, t_ns: u64);
}

impl Clock for VirtualClock {
    fn now_ns(&self) -> u64 {
        VirtualClock::now_ns(self)
    }

    fn sleep_until(&self, t_ns: u64) {
        self.advance_to(t_ns);
    }
}

/// The real monotonic clock, from its creation.
#[derive(Debug, Clone, Copy)]
pub struct RealClock(Instant);

impl RealClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self(Instant::now())
    }
}

impl Default for RealClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for RealClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn sleep_until(&self, t_ns: u64) {
        let now = self.now_ns();
        if t_ns > now {
            std::thread::sleep(Duration::from_nanos(t_ns - now));
        }
    }
}

/// A transport failure.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing arrived, or a write did not complete, in time.
    #[error("{what} timed out after {after_ms} ms")]
    Timeout {
        /// What was being done.
        what: &'static str,
        /// The timeout.
        after_ms: u64,
    },
    /// The peer closed or reset the connection, or the link is down.
    #[error("connection lost while {what}")]
    Closed {
        /// What was being done.
        what: &'static str,
    },
    /// Another I/O error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A reliable, ordered byte pipe to the peer.
pub trait Transport {
    /// Send all of `bytes`.
    fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError>;

    /// Send all of `parts`, in order, as one stream of bytes. A transport
    /// that can gather (`writev`) sends them from where they lie; the
    /// default joins them first.
    fn send_parts(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        self.send(&parts.concat())
    }

    /// Receive at least one byte into `buf`, waiting at most `timeout`.
    /// `Ok(0)` means the peer closed the connection.
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError>;

    /// Best estimate of the one-way latency, for downtime accounting (the
    /// receiver's "resumed" reply travels while the guest already runs).
    fn one_way_latency_ns(&self) -> u64 {
        0
    }

    /// Wait until everything sent so far has left this host (the peer
    /// acknowledged it), at most `timeout`; returns whether it did. A
    /// transport whose `send` returns only once the bytes are out (the
    /// simulated link) has nothing to wait for.
    fn wait_sent(&mut self, timeout: Duration) -> Result<bool, TransportError> {
        let _ = timeout;
        Ok(true)
    }
}

/// The receiving end of a [`SimLink`]: gets bytes at their arrival time on
/// its own clock and answers with reply bytes.
pub trait SimPeer {
    /// Bytes arrived (the peer's clock is already at their arrival time);
    /// returns the bytes it sends back.
    fn deliver(&mut self, bytes: &[u8]) -> Vec<u8>;

    /// The connection closed with nothing more to come.
    fn closed(&mut self);

    /// Whether the peer has shut its end (after a failure): further sends
    /// fail.
    fn has_hung_up(&self) -> bool;
}

/// Faults a [`SimLink`] injects, at exact stream offsets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimFaults {
    /// The link goes down after this many bytes: they arrive, nothing
    /// after them does, and the peer sees the connection close.
    pub cut_after_bytes: Option<u64>,
    /// The peer process dies after receiving this many bytes (it never
    /// sees a close, and never answers again).
    pub peer_dies_after_bytes: Option<u64>,
    /// Flip one bit of the byte at this offset.
    pub corrupt_byte_at: Option<u64>,
    /// The peer's replies are lost.
    pub drop_replies: bool,
}

/// A simulated link between the sender (on `clock`) and a [`SimPeer`] (on
/// `peer_clock`). See the module documentation.
#[derive(Debug)]
pub struct SimLink<P> {
    clock: VirtualClock,
    peer_clock: VirtualClock,
    bandwidth_bits_per_s: f64,
    latency_ns: u64,
    peer: P,
    faults: SimFaults,
    sent: u64,
    /// Replies in flight: (arrival time on the sender's clock, bytes).
    replies: std::collections::VecDeque<(u64, Vec<u8>)>,
    down: bool,
    peer_dead: bool,
}

impl<P: SimPeer> SimLink<P> {
    /// A link of `bandwidth_mbit` Mbit/s and `latency_ms` one way.
    pub fn new(
        clock: VirtualClock,
        peer_clock: VirtualClock,
        bandwidth_mbit: f64,
        latency_ms: f64,
        peer: P,
    ) -> Self {
        // latency_ms is finite and >= 0 (checked by the workload parser).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let latency_ns = (latency_ms * 1e6).round() as u64;
        Self {
            clock,
            peer_clock,
            bandwidth_bits_per_s: bandwidth_mbit * 1e6,
            latency_ns,
            peer,
            faults: SimFaults::default(),
            sent: 0,
            replies: std::collections::VecDeque::new(),
            down: false,
            peer_dead: false,
        }
    }

    /// Inject `faults`.
    pub fn with_faults(mut self, faults: SimFaults) -> Self {
        self.faults = faults;
        self
    }

    /// Bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// The peer.
    pub fn peer(&self) -> &P {
        &self.peer
    }

    /// The peer, mutably.
    pub fn peer_mut(&mut self) -> &mut P {
        &mut self.peer
    }

    /// Take the peer out.
    pub fn into_peer(self) -> P {
        self.peer
    }

    fn deliver(&mut self, bytes: &[u8], arrival_ns: u64) {
        if self.peer_dead || bytes.is_empty() {
            return;
        }
        self.peer_clock.advance_to(arrival_ns);
        let reply = self.peer.deliver(bytes);
        self.queue_reply(reply);
    }

    fn queue_reply(&mut self, reply: Vec<u8>) {
        if !reply.is_empty() && !self.faults.drop_replies {
            let at = self.peer_clock.now_ns() + self.latency_ns;
            self.replies.push_back((at, reply));
        }
    }
}

impl<P: SimPeer> Transport for SimLink<P> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        if self.down || self.peer_dead || self.peer.has_hung_up() {
            return Err(TransportError::Closed {
                what: "sending the stream",
            });
        }
        let start = self.sent;
        let end = start + bytes.len() as u64;
        // How much gets through before a cut or the peer's death.
        let limit = [
            self.faults.cut_after_bytes,
            self.faults.peer_dies_after_bytes,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX);
        let through = end.min(limit.max(start)) - start;
        let through_len = usize::try_from(through).unwrap_or(bytes.len());
        let mut chunk = bytes[..through_len].to_vec();
        if let Some(at) = self.faults.corrupt_byte_at {
            if (start..start + through).contains(&at) {
                let i = usize::try_from(at - start).unwrap_or(0);
                chunk[i] ^= 0x10;
            }
        }
        // Serialisation: the sender's clock moves by the bytes' wire time.
        // The wire time is finite and non-negative.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let wire_ns = (through as f64 * 8.0 * 1e9 / self.bandwidth_bits_per_s).round() as u64;
        let done = self.clock.now_ns() + wire_ns;
        self.clock.advance_to(done);
        self.sent += through;
        self.deliver(&chunk, done + self.latency_ns);
        if through < bytes.len() as u64 {
            if self.faults.peer_dies_after_bytes.is_some_and(|d| d <= end) {
                self.peer_dead = true;
            } else {
                self.down = true;
                self.peer_clock.advance_to(done + self.latency_ns);
                self.peer.closed();
            }
            return Err(TransportError::Closed {
                what: "sending the stream",
            });
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let deadline = self.clock.now_ns().saturating_add(timeout_ns);
        let nothing_queued = self.replies.is_empty();
        match self.replies.front_mut() {
            Some((at, bytes)) if *at <= deadline => {
                self.clock.advance_to(*at);
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                bytes.drain(..n);
                if bytes.is_empty() {
                    self.replies.pop_front();
                }
                Ok(n)
            }
            _ if self.down || (self.peer.has_hung_up() && nothing_queued) => {
                Err(TransportError::Closed {
                    what: "waiting for the receiver",
                })
            }
            _ => {
                self.clock.advance_to(deadline);
                Err(TransportError::Timeout {
                    what: "waiting for the receiver",
                    after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                })
            }
        }
    }

    fn one_way_latency_ns(&self) -> u64 {
        self.latency_ns
    }
}

/// A TCP stream with a timeout on every read and write.
#[derive(Debug)]
pub struct TcpTransport {
    stream: TcpStream,
    write_timeout: Duration,
}

impl TcpTransport {
    /// Wrap a connected stream; every write must finish within
    /// `write_timeout` (reads take their timeout per call).
    pub fn new(stream: TcpStream, write_timeout: Duration) -> Result<Self, TransportError> {
        stream
            .set_write_timeout(Some(write_timeout))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|source| TransportError::Io {
                what: "configuring the migration socket",
                source,
            })?;
        Ok(Self {
            stream,
            write_timeout,
        })
    }

    /// The underlying stream.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

fn map_io(what: &'static str, timeout: Duration, e: std::io::Error) -> TransportError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::WouldBlock | K::TimedOut => TransportError::Timeout {
            what,
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        },
        K::BrokenPipe | K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof => {
            TransportError::Closed { what }
        }
        _ => TransportError::Io { what, source: e },
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.stream
            .write_all(bytes)
            .map_err(|e| map_io("sending the stream", self.write_timeout, e))
    }

    fn send_parts(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        let mut slices: Vec<IoSlice<'_>> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| IoSlice::new(p))
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            // At most IOV_MAX pieces per call; a short write resumes
            // mid-piece.
            match crate::net_sys::send_vectored(&self.stream, rest) {
                Ok(0) => {
                    let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                    return Err(map_io("sending the stream", self.write_timeout, e));
                }
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(map_io("sending the stream", self.write_timeout, e)),
            }
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|source| TransportError::Io {
                what: "setting the read timeout",
                source,
            })?;
        loop {
            match self.stream.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(map_io("waiting for the peer", timeout, e)),
            }
        }
    }

    fn wait_sent(&mut self, timeout: Duration) -> Result<bool, TransportError> {
        // Bytes handed to the socket are not on the wire yet: a round
        // counted as done when its last write returned would credit the
        // link with the socket buffer's bytes (megabytes) for free.
        let deadline = Instant::now() + timeout;
        let mut nap = Duration::from_micros(50);
        loop {
            let unacked = crate::net_sys::tcp_unacked_bytes(&self.stream).map_err(|source| {
                TransportError::Io {
                    what: "reading the socket's unsent bytes",
                    source,
                }
            })?;
            if unacked == 0 {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn send_parts_over_tcp_delivers_every_byte_in_order_across_short_writes() {
        // More pieces than IOV_MAX and more bytes than the socket buffers
        // hold, read slowly: writev returns short, mid-piece, many times.
        let parts: Vec<Vec<u8>> = (0..20_000_u32)
            .map(|i| {
                let len = [0, 1, 8, 4096, 700][i as usize % 5];
                (0..len)
                    .map(|j| u8::try_from((i as usize * 31 + j) % 256).unwrap())
                    .collect()
            })
            .collect();
        let expected = parts.concat();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0; 1000];
            loop {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
                if got.len() % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        });
        let stream = TcpStream::connect(addr).unwrap();
        let mut transport = TcpTransport::new(stream, Duration::from_secs(30)).unwrap();
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        transport.send_parts(&slices).unwrap();
        drop(transport);
        assert_eq!(reader.join().unwrap(), expected);
    }
}
