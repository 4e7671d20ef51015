//! Ping probes: ICMP echo where the host permits it (a ping socket, or a
//! raw socket as root), else a UDP datagram to a closed port (the ICMP
//! "port unreachable" answer proves the host is up), or a TCP connection
//! attempt (SYN-ACK or RST both prove it).

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::PingMethod;

/// Where UDP probes go: traceroute's first port, closed almost everywhere.
const UDP_PROBE_PORT: u16 = 33_434;

/// A reply: the target index and the probe number.
pub(crate) type Reply = (usize, u16);

enum Kind {
    /// ICMP echo over a ping socket (`header` false) or a raw socket.
    Icmp {
        socket: UdpSocket,
        raw: bool,
        id: u16,
    },
    /// One connected UDP socket per target.
    Udp {
        sockets: Vec<Option<UdpSocket>>,
        last_seq: Vec<u16>,
    },
    /// TCP connect to a port.
    Tcp { port: u16, timeout: Duration },
}

/// Sends probes and collects replies.
pub(crate) struct Prober {
    kind: Kind,
    targets: Vec<IpAddr>,
}

impl Prober {
    /// Open probing for `targets` with `method`; also says which method is
    /// in use, for the log.
    pub(crate) fn open(
        method: PingMethod,
        targets: Vec<IpAddr>,
        timeout: Duration,
    ) -> std::io::Result<(Self, &'static str)> {
        let icmp = || -> std::io::Result<(Kind, &'static str)> {
            let id = u16::try_from(std::process::id() & 0xffff).unwrap_or(0);
            let (socket, raw, name) =
                match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)) {
                    Ok(s) => (s, false, "ICMP echo (ping socket)"),
                    Err(_) => (
                        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?,
                        true,
                        "ICMP echo (raw socket)",
                    ),
                };
            socket.set_read_timeout(Some(Duration::from_millis(20)))?;
            Ok((
                Kind::Icmp {
                    socket: socket.into(),
                    raw,
                    id,
                },
                name,
            ))
        };
        let udp = |targets: &[IpAddr]| -> std::io::Result<(Kind, &'static str)> {
            let mut sockets = Vec::new();
            for ip in targets {
                let bind: SocketAddr = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                    .parse()
                    .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
                let socket = UdpSocket::bind(bind)?;
                socket.connect(SocketAddr::new(*ip, UDP_PROBE_PORT))?;
                socket.set_nonblocking(true)?;
                sockets.push(Some(socket));
            }
            Ok((
                Kind::Udp {
                    last_seq: vec![0; sockets.len()],
                    sockets,
                },
                "UDP to a closed port",
            ))
        };
        let all_v4 = targets.iter().all(IpAddr::is_ipv4);
        let (kind, name) = match method {
            PingMethod::Icmp => icmp()?,
            PingMethod::Udp => udp(&targets)?,
            PingMethod::Tcp(port) => (Kind::Tcp { port, timeout }, "TCP connect"),
            PingMethod::Auto => match icmp() {
                Ok(k) if all_v4 => k,
                _ => udp(&targets)?,
            },
        };
        Ok((Self { kind, targets }, name))
    }

    /// Send probe `seq` to target `target`; a TCP probe completes here and
    /// returns its reply.
    pub(crate) fn send(&mut self, target: usize, seq: u16) -> Option<Reply> {
        let ip = *self.targets.get(target)?;
        match &mut self.kind {
            Kind::Icmp { socket, id, .. } => {
                let packet = echo_request(*id, seq);
                let _ = socket.send_to(&packet, SocketAddr::new(ip, 0));
                None
            }
            Kind::Udp { sockets, last_seq } => {
                last_seq[target] = seq;
                if let Some(socket) = &sockets[target] {
                    let _ = socket.send(&seq.to_be_bytes());
                }
                None
            }
            Kind::Tcp { port, timeout } => {
                match TcpStream::connect_timeout(&SocketAddr::new(ip, *port), *timeout) {
                    Ok(_) => Some((target, seq)),
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some((target, seq)),
                    Err(_) => None,
                }
            }
        }
    }

    /// Collect replies that arrived (waits up to ~20 ms for ICMP).
    pub(crate) fn poll(&mut self, replies: &mut Vec<Reply>) {
        match &mut self.kind {
            Kind::Icmp { socket, raw, id } => {
                let mut buf = [0u8; 1500];
                while let Ok((len, from)) = socket.recv_from(&mut buf) {
                    let data = &buf[..len];
                    let icmp = if *raw {
                        let ihl = usize::from(data.first().map_or(0, |b| b & 0x0f)) * 4;
                        data.get(ihl..).unwrap_or(&[])
                    } else {
                        data
                    };
                    // Echo reply: type 0, code 0, checksum, id, seq.
                    if icmp.len() < 8 || icmp[0] != 0 {
                        continue;
                    }
                    let reply_id = u16::from_be_bytes([icmp[4], icmp[5]]);
                    if *raw && reply_id != *id {
                        continue; // another process's ping
                    }
                    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
                    for (target, ip) in self.targets.iter().enumerate() {
                        if *ip == from.ip() {
                            replies.push((target, seq));
                        }
                    }
                    socket.set_read_timeout(Some(Duration::from_millis(1))).ok();
                }
                socket
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .ok();
            }
            Kind::Udp { sockets, last_seq } => {
                let mut buf = [0u8; 64];
                for (target, socket) in sockets.iter().enumerate() {
                    let Some(socket) = socket else { continue };
                    loop {
                        match socket.recv(&mut buf) {
                            // An answer, or the ICMP error reported on the
                            // connected socket: either way the host is up.
                            Ok(_) => replies.push((target, last_seq[target])),
                            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                                replies.push((target, last_seq[target]));
                            }
                            Err(_) => break,
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Kind::Tcp { .. } => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// An ICMP echo request with this id and sequence number.
fn echo_request(id: u16, seq: u16) -> [u8; 16] {
    let mut packet = [0u8; 16];
    packet[0] = 8; // echo request
    packet[4..6].copy_from_slice(&id.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    packet[8..16].copy_from_slice(b"perfplus");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero() {
        let packet = echo_request(0x1234, 7);
        assert_eq!(checksum(&packet), 0);
        assert_eq!(packet[0], 8);
        assert_eq!(&packet[6..8], &[0, 7]);
    }

    #[test]
    fn udp_probe_to_a_closed_local_port_proves_the_host_is_up() {
        let (mut prober, name) = Prober::open(
            PingMethod::Udp,
            vec!["127.0.0.1".parse().unwrap()],
            Duration::from_millis(100),
        )
        .unwrap();
        assert_eq!(name, "UDP to a closed port");
        assert_eq!(prober.send(0, 5), None);
        let mut replies = Vec::new();
        for _ in 0..50 {
            prober.poll(&mut replies);
            if !replies.is_empty() {
                break;
            }
        }
        assert_eq!(replies, vec![(0, 5)]);
    }

    #[test]
    fn tcp_probe_to_a_closed_local_port_proves_the_host_is_up() {
        let (mut prober, _) = Prober::open(
            PingMethod::Tcp(1),
            vec!["127.0.0.1".parse().unwrap()],
            Duration::from_millis(200),
        )
        .unwrap();
        assert_eq!(prober.send(0, 9), Some((0, 9)));
    }
}
