//! Heartbeat sockets: one UDP socket per configured link.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

use super::NodeError;
use crate::config::LinkConfig;

/// An open link: the socket and where its heartbeats go.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) socket: UdpSocket,
    pub(crate) destinations: Vec<SocketAddr>,
    pub(crate) description: String,
}

/// How long a receive call blocks before it checks whether to stop.
pub(crate) const RECV_POLL: Duration = Duration::from_millis(100);

/// Open the socket of one link.
pub(crate) fn open(index: usize, link: &LinkConfig) -> Result<Link, NodeError> {
    let fail = |what: &str, source: std::io::Error| NodeError::Link {
        link: index,
        what: what.to_string(),
        source,
    };
    match link {
        LinkConfig::Unicast {
            interface,
            bind,
            port,
            peers,
        } => {
            let ip = bind.unwrap_or(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let local = SocketAddr::new(ip, *port);
            let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))
                .map_err(|e| fail("create a UDP socket", e))?;
            socket
                .set_reuse_address(true)
                .map_err(|e| fail("set SO_REUSEADDR", e))?;
            if let Some(name) = interface {
                socket.bind_device(Some(name.as_bytes())).map_err(|e| {
                    fail(
                        &format!("bind to interface {name} (needs root or CAP_NET_RAW)"),
                        e,
                    )
                })?;
            }
            socket
                .bind(&local.into())
                .map_err(|e| fail(&format!("bind to {local}"), e))?;
            finish(
                socket,
                peers.clone(),
                format!("unicast {local} → {}", list(peers)),
                index,
            )
        }
        LinkConfig::Multicast {
            interface,
            interface_address,
            group,
            port,
            ttl,
            loopback,
        } => {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
                .map_err(|e| fail("create a UDP socket", e))?;
            socket
                .set_reuse_address(true)
                .map_err(|e| fail("set SO_REUSEADDR", e))?;
            let join = if let Some(addr) = interface_address {
                socket
                    .set_multicast_if_v4(addr)
                    .map_err(|e| fail(&format!("send multicast from {addr}"), e))?;
                InterfaceIndexOrAddress::Address(*addr)
            } else if let Some(name) = interface {
                socket.bind_device(Some(name.as_bytes())).map_err(|e| {
                    fail(
                        &format!("bind to interface {name} (needs root or CAP_NET_RAW)"),
                        e,
                    )
                })?;
                InterfaceIndexOrAddress::Index(
                    interface_index(name)
                        .map_err(|e| fail(&format!("find interface {name}"), e))?,
                )
            } else {
                InterfaceIndexOrAddress::Address(Ipv4Addr::UNSPECIFIED)
            };
            // Bound to the group, the socket gets only this group's packets,
            // not unicast to the same port.
            let local = SocketAddrV4::new(*group, *port);
            socket
                .bind(&SocketAddr::V4(local).into())
                .map_err(|e| fail(&format!("bind to {local}"), e))?;
            socket
                .join_multicast_v4_n(group, &join)
                .map_err(|e| fail(&format!("join multicast group {group}"), e))?;
            socket
                .set_multicast_ttl_v4(u32::from(*ttl))
                .map_err(|e| fail("set the multicast TTL", e))?;
            socket
                .set_multicast_loop_v4(*loopback)
                .map_err(|e| fail("set multicast loopback", e))?;
            let to = SocketAddr::V4(local);
            finish(socket, vec![to], format!("multicast {to}"), index)
        }
        LinkConfig::Broadcast { interface, port } => {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
                .map_err(|e| fail("create a UDP socket", e))?;
            socket
                .set_reuse_address(true)
                .map_err(|e| fail("set SO_REUSEADDR", e))?;
            socket
                .set_broadcast(true)
                .map_err(|e| fail("allow broadcast", e))?;
            socket
                .bind_device(Some(interface.as_bytes()))
                .map_err(|e| {
                    fail(
                        &format!("bind to interface {interface} (needs root or CAP_NET_RAW)"),
                        e,
                    )
                })?;
            let local = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), *port);
            socket
                .bind(&local.into())
                .map_err(|e| fail(&format!("bind to {local}"), e))?;
            let to = SocketAddr::new(Ipv4Addr::BROADCAST.into(), *port);
            finish(
                socket,
                vec![to],
                format!("broadcast {interface}:{port}"),
                index,
            )
        }
    }
}

fn finish(
    socket: Socket,
    destinations: Vec<SocketAddr>,
    description: String,
    index: usize,
) -> Result<Link, NodeError> {
    // Room for seconds of heartbeats from many peers while this node is
    // paused: they are evidence the detector needs when it resumes.
    let _ = socket.set_recv_buffer_size(1 << 20);
    socket
        .set_read_timeout(Some(RECV_POLL))
        .map_err(|source| NodeError::Link {
            link: index,
            what: "set the receive timeout".into(),
            source,
        })?;
    Ok(Link {
        socket: socket.into(),
        destinations,
        description,
    })
}

fn list(peers: &[SocketAddr]) -> String {
    peers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// An interface's index, from sysfs (no unsafe `if_nametoindex`).
fn interface_index(name: &str) -> std::io::Result<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))?;
    text.trim()
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad ifindex"))
}
