//! The control channel's sockets: a server that authenticates each
//! exchange with a fresh nonce and hands the request to the HA loop, and a
//! client for one request/reply exchange (see [`crate::wire::control`] for
//! the protocol). Every read and write has a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::membership::NodeId;
use crate::wire::control::{self, ControlError, Direction, Message, HEADER_LEN, NONCE_LEN};
use crate::wire::ClusterKey;

/// How long one read or write of an exchange may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server waits for its node's answer: an admin's start,
/// stop or migration is answered when it is done.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(900);
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The socket failed (refused, reset, timed out).
    #[error("control exchange with {peer}: {source}")]
    Io {
        /// The peer.
        peer: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The peer's frame was refused.
    #[error("control exchange with {peer}: {source}")]
    Protocol {
        /// The peer.
        peer: SocketAddr,
        /// What was wrong.
        #[source]
        source: ControlError,
    },
}

/// A request the server received, with the way to answer it.
#[derive(Debug)]
pub struct Request {
    /// The sender (0: an admin tool).
    pub from: NodeId,
    /// What it asks.
    pub message: Message,
    /// Where the answer goes (the server waits up to [`IO_TIMEOUT`]).
    pub reply: Sender<Message>,
}

/// Send `message` to the control server at `peer` and return its reply,
/// waiting up to [`IO_TIMEOUT`] for it.
pub fn exchange(
    key: &ClusterKey,
    peer: SocketAddr,
    from: NodeId,
    message: &Message,
) -> Result<Message, ExchangeError> {
    exchange_waiting(key, peer, from, message, IO_TIMEOUT)
}

/// As [`exchange`], waiting up to `reply_timeout` for the reply (an
/// admin's start, stop or migration is answered when done).
pub fn exchange_waiting(
    key: &ClusterKey,
    peer: SocketAddr,
    from: NodeId,
    message: &Message,
    reply_timeout: Duration,
) -> Result<Message, ExchangeError> {
    let io = |source| ExchangeError::Io { peer, source };
    let mut stream = TcpStream::connect_timeout(&peer, CONNECT_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let _ = stream.set_nodelay(true);
    let mut nonce = [0_u8; NONCE_LEN];
    stream.read_exact(&mut nonce).map_err(io)?;
    let frame = control::encode(key, &nonce, Direction::Request, from, message);
    stream.write_all(&frame).map_err(io)?;
    stream.set_read_timeout(Some(reply_timeout)).map_err(io)?;
    let bytes = read_frame(&mut stream).map_err(|e| match e {
        FrameError::Io(source) => ExchangeError::Io { peer, source },
        FrameError::Control(source) => ExchangeError::Protocol { peer, source },
    })?;
    let (_, reply) = control::decode(key, &nonce, Direction::Reply, &bytes)
        .map_err(|source| ExchangeError::Protocol { peer, source })?;
    Ok(reply)
}

enum FrameError {
    Io(std::io::Error),
    Control(ControlError),
}

/// Read one frame: the header first (checked), then exactly its length.
fn read_frame(stream: &mut TcpStream) -> Result<Vec<u8>, FrameError> {
    let mut header = [0_u8; HEADER_LEN];
    stream.read_exact(&mut header).map_err(FrameError::Io)?;
    let len = control::frame_len(&header).map_err(FrameError::Control)?;
    let mut frame = vec![0_u8; len];
    frame[..HEADER_LEN].copy_from_slice(&header);
    stream
        .read_exact(&mut frame[HEADER_LEN..])
        .map_err(FrameError::Io)?;
    Ok(frame)
}

/// Most exchanges served at once; more connections wait in the backlog, so
/// a client that connects and stays silent cannot starve the others.
pub const MAX_CONCURRENT: usize = 16;

/// Serve control exchanges on `listener` until `stop` is set: each request
/// goes to `requests`; a refused frame is reported to `on_refused`.
pub fn serve(
    listener: &TcpListener,
    key: &ClusterKey,
    local: NodeId,
    stop: &AtomicBool,
    requests: &Sender<Request>,
    on_refused: &(dyn Fn(String) + Sync),
) {
    // Non-blocking accept polled, so that `stop` is noticed.
    let _ = listener.set_nonblocking(true);
    let active = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        while !stop.load(Ordering::Relaxed) {
            if active.load(Ordering::SeqCst) >= MAX_CONCURRENT {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    active.fetch_add(1, Ordering::SeqCst);
                    let active = &active;
                    scope.spawn(move || {
                        if let Err(why) = serve_one(stream, key, local, requests) {
                            on_refused(format!("control request from {peer} refused: {why}"));
                        }
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    on_refused(format!("control listener: {e}"));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    });
}

fn serve_one(
    mut stream: TcpStream,
    key: &ClusterKey,
    local: NodeId,
    requests: &Sender<Request>,
) -> Result<(), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut nonce = [0_u8; NONCE_LEN];
    getrandom(&mut nonce).map_err(|e| format!("no randomness for the nonce: {e}"))?;
    stream.write_all(&nonce).map_err(|e| e.to_string())?;
    let bytes = read_frame(&mut stream).map_err(|e| match e {
        FrameError::Io(e) => e.to_string(),
        FrameError::Control(e) => e.to_string(),
    })?;
    let (from, message) =
        control::decode(key, &nonce, Direction::Request, &bytes).map_err(|e| e.to_string())?;
    let (reply_to, reply) = crossbeam_channel::bounded(1);
    requests
        .send(Request {
            from,
            message,
            reply: reply_to,
        })
        .map_err(|_| "the node is stopping".to_string())?;
    let answer = reply.recv_timeout(ANSWER_TIMEOUT).unwrap_or(Message::Ack {
        ok: false,
        message: "the node did not answer in time".into(),
    });
    let frame = control::encode(key, &nonce, Direction::Reply, local, &answer);
    stream.write_all(&frame).map_err(|e| e.to_string())
}

/// Fill `buf` from the kernel's random source.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}
