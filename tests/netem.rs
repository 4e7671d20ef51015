//! The network-condition helpers of `tests/support/netem.rs` do what they
//! say on real packets: the delayer holds each UDP packet at least its
//! delay, and the loss rule drops.

mod support;

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::netem::{set_loss, Delay, Delayer};
use support::netns::{spawn_in, veth, Netns};

#[test]
fn delayer_holds_every_packet_for_its_delay_and_full_loss_drops_all() {
    const TEST: &str = "delayer_holds_every_packet_for_its_delay_and_full_loss_drops_all";
    let missing = support::netns::unavailable().or_else(support::netem::unavailable);
    if let Some(why) = missing {
        return support::skip(TEST, &why);
    }
    let a = Netns::new("ppnetem-a");
    let b = Netns::new("ppnetem-b");
    veth(&a, "ppnea", "10.204.9.1/24", &b, "ppneb", "10.204.9.2/24");
    let delayer = Delayer::start(
        &a.name,
        7,
        Delay {
            mean_ms: 150.0,
            jitter_ms: 0.0,
        },
        1,
    )
    .expect("start the delayer");

    // Sent-at times, by index, shared by sender and receiver (one process,
    // one monotonic clock).
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let receiver = spawn_in(&b.name, || {
        let socket = UdpSocket::bind("10.204.9.2:9400").expect("bind in b");
        socket
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        while let Ok(n) = socket.recv(&mut buf) {
            got.push((buf[..n].to_vec(), Instant::now()));
        }
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    let sent_clone = sent.clone();
    spawn_in(&a.name, move || {
        let socket = UdpSocket::bind("10.204.9.1:0").expect("bind in a");
        for i in 0u8..10 {
            sent_clone.lock().expect("lock").push(Instant::now());
            socket.send_to(&[i], "10.204.9.2:9400").expect("send");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Held packets meet the loss rule when released (it hooks later).
        std::thread::sleep(Duration::from_millis(400));
        set_loss("ppnetem-a", 1000).expect("full loss");
        for i in 10u8..15 {
            socket.send_to(&[i], "10.204.9.2:9400").expect("send");
        }
    })
    .join()
    .expect("sender");
    let got = receiver.join().expect("receiver");
    let sent = sent.lock().expect("lock").clone();
    let indexes: Vec<u8> = got.iter().map(|(p, _)| p[0]).collect();
    assert_eq!(
        indexes,
        (0u8..10).collect::<Vec<_>>(),
        "all delayed packets, none lost ones"
    );
    for (payload, at) in &got {
        let took = at.duration_since(sent[usize::from(payload[0])]);
        // A lower bound only: a packet cannot arrive before its delay.
        assert!(
            took >= Duration::from_millis(150),
            "packet {} took {took:?}",
            payload[0]
        );
    }
    assert!(delayer.delayed() >= 10, "{} delayed", delayer.delayed());
}
