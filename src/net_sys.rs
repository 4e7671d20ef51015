//! Socket queries the standard library lacks, for the migration transport
//! (which forbids `unsafe`): one `ioctl`, wrapped safely.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

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
