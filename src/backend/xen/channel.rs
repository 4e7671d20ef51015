//! [`CommandChannel`]: the migration transport as xl has it, a command
//! (`ssh HOST xl migrate-receive`, or any shell command) whose standard
//! input carries the stream and whose standard output carries the
//! receiver's answers.
//!
//! Every write and every read has a timeout (no progress for that long is
//! a failure), so a receiver that hangs cannot keep a suspended guest
//! hostage. Writes run with `SIGPIPE` blocked in the writing thread: a
//! receiver that dies is an `EPIPE` error, never a killed process, also
//! when perfplus is a library inside a C program that did not ignore the
//! signal.

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::migration::TransportError;

/// Bytes the pipe to the transport command may buffer (the default 64 KiB
/// means a context switch every 16 pages).
const PIPE_BYTES: libc::c_int = 1 << 20;

/// A running transport command and its two pipes.
#[derive(Debug)]
pub struct CommandChannel {
    child: Child,
    writer: Option<ChannelWriter>,
    reader: ChannelReader,
    command: String,
}

/// The stream side (the command's standard input).
#[derive(Debug)]
pub struct ChannelWriter {
    stdin: ChildStdin,
    timeout: Duration,
    bytes: u64,
}

/// The answer side (the command's standard output).
#[derive(Debug)]
pub struct ChannelReader {
    stdout: ChildStdout,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> TransportError {
    move |source| TransportError::Io { what, source }
}

/// Wait until `fd` is ready for `events` or `timeout` passes; false on timeout.
fn wait_fd(fd: RawFd, events: libc::c_short, timeout: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n > 0 {
            return Ok(true);
        }
        if left.is_zero() {
            return Ok(false);
        }
    }
}

/// Block `SIGPIPE` in this thread while `f` runs; a `SIGPIPE` it raised
/// is consumed before the old mask comes back.
pub(super) fn without_sigpipe<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: an all-zero sigset_t is a valid (empty) set to fill in.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain signal-set manipulation on local sets.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: as above.
    unsafe { libc::sigaddset(&mut set, libc::SIGPIPE) };
    // SAFETY: changes only this thread's mask; `old` receives the previous one.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    let result = f();
    // SAFETY: reads a local set.
    if unsafe { libc::sigismember(&old, libc::SIGPIPE) } == 0 {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a zero timeout only takes a pending SIGPIPE of this
        // thread, raised by a write in `f`, if there is one.
        while unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) } == libc::SIGPIPE {}
    }
    // SAFETY: puts this thread's previous mask back.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    result
}

impl ChannelWriter {
    /// Send all of `bytes`; fails if the command stops reading for the
    /// write timeout, or has exited.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        let fd = self.stdin.as_raw_fd();
        let timeout = self.timeout;
        without_sigpipe(|| {
            let mut rest = bytes;
            while !rest.is_empty() {
                // SAFETY: `rest` is readable for its length; `fd` is our
                // open, non-blocking pipe.
                let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
                if n >= 0 {
                    // n <= rest.len().
                    rest = &rest[n.unsigned_abs()..];
                    continue;
                }
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN) => {
                        if !wait_fd(fd, libc::POLLOUT, timeout).map_err(io("waiting to send"))? {
                            return Err(TransportError::Timeout {
                                what: "sending the stream (the receiver stopped reading)",
                                after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                            });
                        }
                    }
                    Some(libc::EPIPE) => {
                        return Err(TransportError::Closed {
                            what: "sending the stream",
                        })
                    }
                    _ => {
                        return Err(TransportError::Io {
                            what: "sending the stream",
                            source: e,
                        })
                    }
                }
            }
            Ok(())
        })?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes
    }

    /// The pipe's descriptor (for [`pipe_queued_bytes`] from elsewhere).
    pub fn raw_fd(&self) -> RawFd {
        self.stdin.as_raw_fd()
    }

    /// Bytes written but still in the pipe to the command (not yet read
    /// by it).
    pub fn queued_bytes(&self) -> u64 {
        pipe_queued_bytes(self.stdin.as_raw_fd())
    }
}

/// Whether the reading end of the pipe whose writing end is `fd` is closed
/// (its bytes will never drain).
pub(super) fn pipe_reader_gone(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout only looks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0
}

/// Bytes in the pipe behind `fd` (either end); 0 if it cannot tell.
pub(super) fn pipe_queued_bytes(fd: RawFd) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int; `fd` is an open pipe descriptor.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 {
        return 0;
    }
    u64::try_from(n).unwrap_or(0)
}

impl ChannelReader {
    /// Read exactly `buf.len()` bytes, waiting at most `timeout` for each
    /// piece.
    pub fn recv_exact(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
        what: &'static str,
    ) -> Result<(), TransportError> {
        let mut got = 0;
        while got < buf.len() {
            let n = self.recv(&mut buf[got..], timeout, what)?;
            if n == 0 {
                return Err(TransportError::Closed { what });
            }
            got += n;
        }
        Ok(())
    }

    /// Read what is there (at least one byte), waiting at most `timeout`;
    /// `Ok(0)` when the command closed its output.
    pub fn recv(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
        what: &'static str,
    ) -> Result<usize, TransportError> {
        let fd = self.stdout.as_raw_fd();
        if !wait_fd(fd, libc::POLLIN, timeout).map_err(io(what))? {
            return Err(TransportError::Timeout {
                what,
                after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
        loop {
            match self.stdout.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TransportError::Io { what, source: e }),
            }
        }
    }
}

impl CommandChannel {
    /// Start `command` under `sh -c`, as xl runs its migration transport.
    pub fn spawn(command: &str, write_timeout: Duration) -> Result<Self, TransportError> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(io("starting the migration transport command"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TransportError::Closed {
                what: "starting the migration transport command",
            });
        };
        let fd = stdin.as_raw_fd();
        // SAFETY: fcntl on our own pipe descriptor. A pipe that cannot grow
        // (a lower /proc/sys/fs/pipe-max-size) just stays at its size.
        unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES) };
        // SAFETY: as above.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above; writes then never block (they poll).
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
        Ok(Self {
            child,
            writer: Some(ChannelWriter {
                stdin,
                timeout: write_timeout,
                bytes: 0,
            }),
            reader: ChannelReader { stdout },
            command: command.to_string(),
        })
    }

    /// The command line.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The writer and the reader, to use from two threads.
    pub fn split(&mut self) -> Result<(&mut ChannelWriter, &mut ChannelReader), TransportError> {
        match &mut self.writer {
            Some(w) => Ok((w, &mut self.reader)),
            None => Err(TransportError::Closed {
                what: "sending the stream (already closed)",
            }),
        }
    }

    /// Send `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.split()?.0.send(bytes)
    }

    /// Read exactly `buf.len()` bytes.
    pub fn recv_exact(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
        what: &'static str,
    ) -> Result<(), TransportError> {
        self.reader.recv_exact(buf, timeout, what)
    }

    /// Bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.writer.as_ref().map_or(0, ChannelWriter::bytes_sent)
    }

    /// Bytes sent but not yet read by the command.
    pub fn queued_bytes(&self) -> u64 {
        self.writer.as_ref().map_or(0, ChannelWriter::queued_bytes)
    }

    /// Close the stream side: the receiver sees the end of its input.
    pub fn close_writer(&mut self) {
        self.writer = None;
    }

    /// Close the stream and wait up to `grace` for the command to exit;
    /// past that it is killed (the command only, by its pid). Its exit
    /// status, if it exited by itself.
    pub fn finish(mut self, grace: Duration) -> Option<ExitStatus> {
        self.close_writer();
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return None;
                }
            }
        }
    }
}

impl Drop for CommandChannel {
    fn drop(&mut self) {
        self.writer = None;
        // Reap it if it has exited; a finish() did the waiting already.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn bytes_go_through_the_command_and_back() {
        let mut ch = CommandChannel::spawn("cat", T).unwrap();
        ch.send(b"hello through cat").unwrap();
        let mut buf = [0_u8; 17];
        ch.recv_exact(&mut buf, T, "reading").unwrap();
        assert_eq!(&buf, b"hello through cat");
        assert_eq!(ch.bytes_sent(), 17);
        assert_eq!(ch.queued_bytes(), 0, "cat read it all");
        assert!(!pipe_reader_gone(ch.split().unwrap().0.raw_fd()));
        assert!(ch.finish(T).is_some_and(|s| s.success()));
    }

    #[test]
    fn a_receiver_that_dies_is_a_closed_connection_not_a_signal() {
        let mut ch = CommandChannel::spawn("head -c 10 >/dev/null", T).unwrap();
        let big = vec![7_u8; 4 << 20];
        let err = ch.send(&big).unwrap_err();
        assert!(matches!(err, TransportError::Closed { .. }), "{err}");
        let fd = ch.split().unwrap().0.raw_fd();
        assert!(pipe_reader_gone(fd));
    }

    #[test]
    fn a_silent_receiver_times_out() {
        let mut ch = CommandChannel::spawn("sleep 5", T).unwrap();
        let mut buf = [0_u8; 4];
        let err = ch
            .recv_exact(
                &mut buf,
                Duration::from_millis(100),
                "waiting for the banner",
            )
            .unwrap_err();
        assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
        assert!(ch.finish(Duration::from_millis(50)).is_none(), "killed");
    }

    #[test]
    fn a_receiver_that_stops_reading_times_out() {
        let mut ch = CommandChannel::spawn("sleep 5", Duration::from_millis(200)).unwrap();
        let big = vec![7_u8; 8 << 20];
        let err = ch.send(&big).unwrap_err();
        assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    }
}
