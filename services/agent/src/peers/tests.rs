//! The wire format's checks, and detectors talking over real UDP sockets on
//! loopback (no traffic leaves the host): they see each other, a crashed
//! one is found dead, one that leaves is not, and nodes with different
//! fleet keys never hear each other.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant as TokioInstant;
use vipfleet_core::machine::Input;
use vipfleet_core::peers::{Message, PeerConfig, PeerStatus};
use vipfleet_core::{Incarnation, Instant, NodeId};

use super::auth::unix_now_ms;
use super::wire::{self, WireError, MAX_DATAGRAM_BYTES};
use super::{AddressBook, KeyRing, PeerAuth, PeerKey, Transport};
use crate::dashboard::metrics::Metrics;
use crate::driver::peers::PeerLink;
use crate::secret::Secret;

/// Generous against a loaded CI machine: the default timings find a crash
/// in 400 ms.
const VERDICT_WITHIN: Duration = Duration::from_secs(2);
/// How long a node that left is watched for a wrong `Dead`: several
/// detection bounds.
const NO_DEAD_FOR: Duration = Duration::from_millis(1200);
/// Fleet keys of the tests.
const KEY: &str = "vipfleet-test-fleet-key-0123456789abcdef0123";
const OTHER_KEY: &str = "vipfleet-other-fleet-key-0123456789abcdef01";

fn sealed(key: &str) -> PeerAuth {
    let secret = Secret::parse(key, super::seal::MIN_KEY_BYTES).unwrap();
    PeerAuth::sealed(KeyRing {
        current: PeerKey::new(&secret).unwrap(),
        previous: None,
    })
}

fn ping() -> Message {
    Message::Ping {
        seq: 7,
        from: NodeId::new("i-a"),
        from_inc: Incarnation(1),
        to: NodeId::new("i-b"),
        to_inc: Incarnation(2),
    }
}

#[test]
fn messages_round_trip_in_a_versioned_envelope() {
    let bytes = wire::encode(&ping()).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with("{\"v\":1,\"m\":"), "{text}");
    assert_eq!(wire::decode(&bytes), Ok(ping()));
    // A hint an older agent drops as garbled (at debug level): it only
    // makes its receivers probe sooner.
    let hint = Message::Suspect {
        from: NodeId::new("i-a"),
        node: NodeId::new("i-c"),
        inc: Incarnation(3),
    };
    assert_eq!(wire::decode(&wire::encode(&hint).unwrap()), Ok(hint));
}

#[test]
fn other_versions_garbage_and_oversized_datagrams_are_refused() {
    let text = String::from_utf8(wire::encode(&ping()).unwrap()).unwrap();
    let v2 = text.replace("\"v\":1", "\"v\":2");
    assert_eq!(wire::decode(v2.as_bytes()), Err(WireError::Version(2)));
    // Another version is refused as such even if its message is unknown.
    assert_eq!(
        wire::decode(br#"{"v":3,"m":{"Gossip":{}}}"#),
        Err(WireError::Version(3))
    );
    for garbled in [
        &b""[..],
        b"\xff\xfe",
        b"{}",
        b"{\"v\":1}",
        b"{\"v\":1,\"m\":{\"Ping\":{}}}",
        b"[1]",
    ] {
        assert!(
            matches!(wire::decode(garbled), Err(WireError::Garbled(_))),
            "{garbled:?}"
        );
    }
    let big = vec![b' '; MAX_DATAGRAM_BYTES + 1];
    assert_eq!(wire::decode(&big), Err(WireError::Oversized(MAX_DATAGRAM_BYTES + 1)));
}

#[tokio::test]
async fn bad_datagrams_are_counted_and_skipped() {
    let metrics = Arc::new(Metrics::new());
    let mut transport = Transport::bind("127.0.0.1:0".parse().unwrap(), PeerAuth::Insecure, metrics.clone())
        .await
        .unwrap();
    let to = transport.local_addr().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for bad in [
        b"not json".to_vec(),
        br#"{"v":2,"m":null}"#.to_vec(),
        vec![b'x'; MAX_DATAGRAM_BYTES + 100],
    ] {
        sender.send_to(&bad, to).await.unwrap();
    }
    sender.send_to(&wire::encode(&ping()).unwrap(), to).await.unwrap();
    let got = tokio::time::timeout(VERDICT_WITHIN, transport.recv()).await.unwrap();
    assert_eq!(got, ping());
    let text = metrics.render();
    assert!(
        text.contains("vipfleet_peer_datagrams_total{direction=\"dropped\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("vipfleet_peer_datagrams_total{direction=\"received\"} 1"),
        "{text}"
    );
}

/// A sealed transport refuses, counts by reason and skips what is not
/// sealed with its key, what is tampered with, and what comes again; it
/// hands on what is.
#[tokio::test]
async fn unauthenticated_datagrams_are_refused_by_reason() {
    let metrics = Arc::new(Metrics::new());
    let mut transport = Transport::bind("127.0.0.1:0".parse().unwrap(), sealed(KEY), metrics.clone())
        .await
        .unwrap();
    let to = transport.local_addr().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let message = wire::encode(&ping()).unwrap();
    let now = unix_now_ms();
    let good = sealed(KEY).wrap(message.clone(), now);
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let stale = sealed(KEY).wrap(message.clone(), now - 60_000);
    for bad in [
        message.clone(),                              // unsealed
        sealed(OTHER_KEY).wrap(message.clone(), now), // another fleet's key
        flipped,                                      // bad_tag
        good[..20].to_vec(),                          // truncated
        stale,                                        // stale
    ] {
        sender.send_to(&bad, to).await.unwrap();
    }
    sender.send_to(&good, to).await.unwrap();
    let got = tokio::time::timeout(VERDICT_WITHIN, transport.recv()).await.unwrap();
    assert_eq!(got, ping());
    // The same datagram again is a replay; the next good one comes through.
    sender.send_to(&good, to).await.unwrap();
    let next = sealed(KEY).wrap(message, unix_now_ms());
    sender.send_to(&next, to).await.unwrap();
    let got = tokio::time::timeout(VERDICT_WITHIN, transport.recv()).await.unwrap();
    assert_eq!(got, ping());
    let text = metrics.render();
    for reason in ["unsealed", "truncated", "stale", "replayed"] {
        assert!(
            text.contains(&format!(
                "vipfleet_peer_messages_rejected_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {text}"
        );
    }
    // Another key's id is unknown (or, one time in 256, the same: a bad tag).
    let tags = ["unknown_key", "bad_tag"]
        .iter()
        .filter_map(|r| {
            let prefix = format!("vipfleet_peer_messages_rejected_total{{reason=\"{r}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)?.parse::<u32>().ok())
        })
        .sum::<u32>();
    assert_eq!(tags, 2, "{text}");
    assert!(
        text.contains("vipfleet_peer_datagrams_total{direction=\"dropped\"} 6"),
        "{text}"
    );
    assert!(
        text.contains("vipfleet_peer_datagrams_total{direction=\"received\"} 2"),
        "{text}"
    );
}

/// What one node's detector believes, published after every event.
#[derive(Clone, Debug, Default)]
struct Seen {
    status: BTreeMap<NodeId, PeerStatus>,
    acked: BTreeSet<NodeId>,
    dead: Vec<NodeId>,
}

struct Node {
    id: NodeId,
    /// `true`: leave before stopping; `false`: vanish (a crash).
    stop: Option<oneshot::Sender<bool>>,
    seen: watch::Receiver<Seen>,
}

/// `n` nodes on loopback sharing the fleet key.
async fn fleet(n: usize) -> Vec<Node> {
    fleet_with_keys(&vec![KEY; n]).await
}

/// A node per key on loopback, each knowing the others, each running its
/// link the way the driver does (receive, tick at `next_wake`).
async fn fleet_with_keys(keys: &[&str]) -> Vec<Node> {
    let origin = TokioInstant::now();
    let mut transports = Vec::new();
    let mut book = AddressBook::default();
    let ids: Vec<NodeId> = (0..keys.len()).map(|i| NodeId::new(format!("i-{i}"))).collect();
    for (id, key) in ids.iter().zip(keys) {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let transport = Transport::bind(addr, sealed(key), Arc::new(Metrics::new()))
            .await
            .unwrap();
        book.insert(id.clone(), transport.local_addr().unwrap());
        transports.push(transport);
    }
    let members: Vec<(NodeId, Incarnation)> = ids.iter().map(|id| (id.clone(), Incarnation(1))).collect();
    let mut nodes = Vec::new();
    for (id, transport) in ids.iter().zip(transports) {
        let detector = PeerLink::detector(id.clone(), Incarnation(1), PeerConfig::default());
        let mut link = PeerLink::new(transport, detector, Arc::new(Metrics::new()));
        link.set_members(members.clone(), book.clone(), clock(origin));
        let (stop_tx, stop_rx) = oneshot::channel();
        let (seen_tx, seen_rx) = watch::channel(Seen::default());
        tokio::spawn(run(link, origin, stop_rx, seen_tx));
        nodes.push(Node {
            id: id.clone(),
            stop: Some(stop_tx),
            seen: seen_rx,
        });
    }
    nodes
}

fn clock(origin: TokioInstant) -> Instant {
    Instant::from_offset(origin.elapsed())
}

async fn run(mut link: PeerLink, origin: TokioInstant, mut stop: oneshot::Receiver<bool>, seen: watch::Sender<Seen>) {
    loop {
        let wake = link.next_wake().map(|w| origin + w.as_offset());
        let inputs = tokio::select! {
            leave = &mut stop => {
                if leave.unwrap_or(false) {
                    link.leave().await;
                }
                return; // the socket closes with the link
            }
            message = link.recv() => link.receive(message, clock(origin)),
            () = sleep_until(wake) => link.tick(clock(origin)),
        };
        seen.send_modify(|s| {
            for (id, state) in link.state().members() {
                s.status.insert(id.clone(), state.status);
                if state.last_ack_at.is_some() {
                    s.acked.insert(id.clone());
                }
            }
            for input in inputs {
                if let Input::PeerDead { node, .. } = input {
                    s.dead.push(node);
                }
            }
        });
    }
}

async fn sleep_until(at: Option<TokioInstant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits until `node`'s view satisfies `ok`; panics with the view after
/// `within`.
async fn until(node: &Node, within: Duration, what: &str, ok: impl Fn(&Seen) -> bool) {
    let mut seen = node.seen.clone();
    let waited = tokio::time::timeout(within, async {
        loop {
            if ok(&seen.borrow_and_update()) {
                return;
            }
            if seen.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    let view = node.seen.borrow().clone();
    assert!(
        waited.is_ok() && ok(&view),
        "{}: {what} not within {within:?}: {view:?}",
        node.id
    );
}

async fn all_alive(nodes: &[Node]) {
    for node in nodes {
        let others: Vec<NodeId> = nodes.iter().map(|n| n.id.clone()).filter(|id| *id != node.id).collect();
        until(node, VERDICT_WITHIN, "every other node acked", |s| {
            others
                .iter()
                .all(|o| s.acked.contains(o) && s.status.get(o) == Some(&PeerStatus::Alive))
        })
        .await;
    }
}

#[tokio::test]
async fn three_nodes_on_loopback_see_each_other_alive() {
    let nodes = fleet(3).await;
    all_alive(&nodes).await;
    for node in &nodes {
        assert!(node.seen.borrow().dead.is_empty());
    }
}

/// Two nodes with the same key see each other alive; a third with
/// another key hears nobody and is heard by nobody (it is found dead: the
/// other two cannot reach it, and each confirms the other's failure).
#[tokio::test]
async fn nodes_with_another_fleet_key_do_not_hear_each_other() {
    let nodes = fleet_with_keys(&[KEY, KEY, OTHER_KEY]).await;
    let (a, b, stranger) = (&nodes[0], &nodes[1], &nodes[2]);
    until(a, VERDICT_WITHIN, "b acked", |s| s.acked.contains(&b.id)).await;
    until(b, VERDICT_WITHIN, "a acked", |s| s.acked.contains(&a.id)).await;
    for node in [a, b] {
        until(node, VERDICT_WITHIN, "the stranger found dead", |s| {
            s.dead.contains(&stranger.id)
        })
        .await;
        let seen = node.seen.borrow().clone();
        assert!(!seen.acked.contains(&stranger.id), "{}: {seen:?}", node.id);
        assert_eq!(seen.status.get(&stranger.id), Some(&PeerStatus::Dead));
    }
    let seen = stranger.seen.borrow().clone();
    assert!(seen.acked.is_empty(), "the stranger heard an ack: {seen:?}");
}

#[tokio::test]
async fn a_crashed_node_is_found_dead_by_the_others() {
    let mut nodes = fleet(3).await;
    all_alive(&nodes).await;
    let crashed = nodes[2].id.clone();
    let _ = nodes[2].stop.take().unwrap().send(false);
    for node in &nodes[..2] {
        until(node, VERDICT_WITHIN, "the crashed node reported dead", |s| {
            s.dead.contains(&crashed) && s.status.get(&crashed) == Some(&PeerStatus::Dead)
        })
        .await;
        assert!(node.seen.borrow().dead.iter().all(|d| *d == crashed));
    }
}

#[tokio::test]
async fn a_node_that_leaves_is_marked_left_and_never_dead() {
    let mut nodes = fleet(3).await;
    all_alive(&nodes).await;
    let leaving = nodes[2].id.clone();
    let _ = nodes[2].stop.take().unwrap().send(true);
    for node in &nodes[..2] {
        until(node, VERDICT_WITHIN, "the leaving node marked Left", |s| {
            s.status.get(&leaving) == Some(&PeerStatus::Left)
        })
        .await;
    }
    tokio::time::sleep(NO_DEAD_FOR).await;
    for node in &nodes[..2] {
        let seen = node.seen.borrow().clone();
        assert!(seen.dead.is_empty(), "{}: {seen:?}", node.id);
        assert_eq!(seen.status.get(&leaving), Some(&PeerStatus::Left));
    }
}
