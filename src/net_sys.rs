//! Socket calls the standard library lacks, for the migration transport
//! (which forbids `unsafe`): one `ioctl` and one `sendmsg`, wrapped safely.

use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// Most pieces one `sendmsg` takes (`UIO_MAXIOV`).
const MAX_IOV: usize = 1024;

/// One `sendmsg(MSG_NOSIGNAL)` of up to [`MAX_IOV`] of `parts`: the
/// gathering counterpart of std's `TcpStream::write`, which also passes
/// `MSG_NOSIGNAL`. (`write_vectored` is `writev`, which raises SIGPIPE on a
/// closed connection: fatal in a C program that links the library and did
/// not ignore the signal.) Returns the bytes sent; honours the socket's
/// send timeout like a write.
pub(crate) fn send_vectored(stream: &TcpStream, parts: &[IoSlice<'_>]) -> io::Result<usize> {
    let parts = &parts[..parts.len().min(MAX_IOV)];
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix (std guarantees it); the
    // kernel only reads through the pointer.
    msg.msg_iov = parts.as_ptr().cast_mut().cast();
    msg.msg_iovlen = parts.len();
    loop {
        // SAFETY: the fd is a TCP socket owned by `stream` for the whole
        // call; `msg` points at `parts`, borrowed and valid for the call,
        // and names no address or control data.
        let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(usize::try_from(n).unwrap_or(0));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Bytes written into `stream` that the peer has not acknowledged yet
/// (`SIOCOUTQ`): what the socket still holds, not what left.
pub(crate) fn tcp_unacked_bytes(stream: &TcpStream) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: the fd is a TCP socket owned by `stream` for the whole call;
    // SIOCOUTQ (== TIOCOUTQ) writes one c_int through the valid pointer.
    let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(queued).unwrap_or(0))
}
