//! The detector on a simulated network: seeded latency, loss, partitions
//! and crashes, on virtual time driven by `next_wake`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::time::Instant;
use crate::types::{Incarnation, NodeId};

const MIN_LATENCY: Duration = Duration::from_millis(1);
const MAX_LATENCY: Duration = Duration::from_millis(5);
const WARM_UP: Duration = Duration::from_secs(2);
const TEN_MINUTES: Duration = Duration::from_secs(600);

fn id(i: usize) -> NodeId {
    NodeId::new(format!("n{i}"))
}

struct Net {
    now: Instant,
    seed: u64,
    config: PeerConfig,
    incs: Vec<Incarnation>,
    nodes: Vec<Detector>,
    /// (delivery time, send order) -> (from, to, message)
    queue: BTreeMap<(Instant, u64), (usize, usize, Message)>,
    sent: u64,
    rng: SmallRng,
    loss: f64,
    /// Ordered pairs (from, to) whose messages are dropped.
    blocked: BTreeSet<(usize, usize)>,
    crashed: BTreeSet<usize>,
    /// (when, who concluded, what)
    verdicts: Vec<(Instant, usize, Verdict)>,
    /// Who sent `Suspect` hints.
    hinted_by: BTreeSet<usize>,
}

impl Net {
    fn new(n: usize, seed: u64) -> Self {
        let config = PeerConfig::default();
        let incs: Vec<Incarnation> = (0..n).map(|i| Incarnation(1000 + i as u64)).collect();
        let mut net = Net {
            now: Instant::ZERO,
            seed,
            config,
            nodes: (0..n)
                .map(|i| Detector::new(id(i), incs[i], config, seed.wrapping_mul(1_000_003) + i as u64))
                .collect(),
            incs,
            queue: BTreeMap::new(),
            sent: 0,
            rng: SmallRng::seed_from_u64(seed ^ 0x9e37_79b9),
            loss: 0.0,
            blocked: BTreeSet::new(),
            crashed: BTreeSet::new(),
            verdicts: Vec::new(),
            hinted_by: BTreeSet::new(),
        };
        let list = net.list();
        for node in &mut net.nodes {
            node.set_members(list.clone(), Instant::ZERO);
        }
        net
    }

    /// The member list as the lease store has it.
    fn list(&self) -> Vec<(NodeId, Incarnation)> {
        self.incs.iter().enumerate().map(|(i, inc)| (id(i), *inc)).collect()
    }

    fn index(&self, node: &NodeId) -> usize {
        node.as_str()[1..].parse().expect("n<i>")
    }

    fn partition(&mut self, a: usize, b: usize) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    fn dispatch(&mut self, from: usize, out: Output) {
        for v in out.verdicts {
            self.verdicts.push((self.now, from, v));
        }
        for Outgoing { to, message } in out.send {
            if matches!(message, Message::Suspect { .. }) {
                self.hinted_by.insert(from);
            }
            let to = self.index(&to);
            let lost = self.rng.random_bool(self.loss);
            if lost || self.crashed.contains(&from) || self.blocked.contains(&(from, to)) {
                continue;
            }
            let latency = self.rng.random_range(MIN_LATENCY..=MAX_LATENCY);
            self.sent += 1;
            self.queue.insert((self.now + latency, self.sent), (from, to, message));
        }
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        loop {
            let next_message = self.queue.first_key_value().map(|(k, _)| k.0);
            let next_timer = (0..self.nodes.len())
                .filter(|i| !self.crashed.contains(i))
                .filter_map(|i| self.nodes[i].next_wake())
                .min();
            let next = match (next_message, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).expect("detectors always have a timer"),
            };
            if next > end {
                self.now = end;
                return;
            }
            assert!(next >= self.now, "time went back: {next} < {}", self.now);
            self.now = next;
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let (_, to, message) = entry.remove();
                if self.crashed.contains(&to) {
                    continue;
                }
                let out = self.nodes[to].receive(message, self.now);
                self.dispatch(to, out);
            }
            for i in 0..self.nodes.len() {
                if !self.crashed.contains(&i) && self.nodes[i].next_wake().is_some_and(|at| at <= self.now) {
                    let out = self.nodes[i].tick(self.now);
                    self.dispatch(i, out);
                }
            }
        }
    }

    /// The node's process comes back with a new incarnation; the others'
    /// member lists still hold the old one.
    fn restart(&mut self, i: usize, inc: Incarnation) {
        self.crashed.remove(&i);
        let mut node = Detector::new(id(i), inc, self.config, self.seed ^ 0xdead);
        node.set_members(self.list(), self.now);
        self.nodes[i] = node;
    }

    fn count(&self, what: impl Fn(&Verdict) -> bool) -> usize {
        self.verdicts.iter().filter(|(_, _, v)| what(v)).count()
    }

    fn deads(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Dead { .. }))
    }

    fn suspects(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Suspect { .. }))
    }
}

/// Crashes one node in each of `trials` fleets, at different phases, and
/// returns the time from each crash to the first `Dead` about it.
fn detection_times(n: usize, trials: u64) -> Vec<Duration> {
    let mut times = Vec::new();
    for trial in 0..trials {
        let mut net = Net::new(n, trial);
        let victim = (trial as usize) % n;
        // Vary the crash's phase against everyone's probe rhythm.
        net.run_for(WARM_UP + Duration::from_millis(trial * 7 % 100));
        let crash_at = net.now;
        assert!(
            net.verdicts.is_empty(),
            "trial {trial}: verdicts before the crash: {:?}",
            net.verdicts
        );
        net.crashed.insert(victim);
        net.run_for(Duration::from_secs(2));
        let dead: Vec<&(Instant, usize, Verdict)> = net
            .verdicts
            .iter()
            .filter(|(_, _, v)| matches!(v, Verdict::Dead { .. }))
            .collect();
        for &&(at, by, ref v) in &dead {
            assert_eq!(
                *v,
                Verdict::Dead {
                    node: id(victim),
                    inc: net.incs[victim]
                },
                "trial {trial}"
            );
            assert!(at > crash_at && by != victim, "trial {trial}");
        }
        let judges: BTreeSet<usize> = dead.iter().map(|(_, by, _)| *by).collect();
        assert_eq!(
            judges.len(),
            n - 1,
            "trial {trial}: every live node reports the crash: {dead:?}"
        );
        assert_eq!(dead.len(), n - 1, "trial {trial}: reported once each");
        times.push(dead[0].0.saturating_since(crash_at));
    }
    times.sort();
    times
}

fn describe(times: &[Duration]) -> String {
    let ms = |d: Duration| d.as_millis();
    format!(
        "min {} ms, median {} ms, p90 {} ms, max {} ms",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10]),
        ms(times[times.len() - 1])
    )
}

#[test]
fn a_crash_in_three_nodes_is_dead_within_the_bound() {
    let bound = PeerConfig::default().detection_bound() + MAX_LATENCY;
    let times = detection_times(3, 300);
    println!("3 nodes, 300 crashes: {}", describe(&times));
    assert!(times.iter().all(|t| *t <= bound), "over {bound:?}: {times:?}");
}

/// Above `PROBES_PER_INTERVAL + 1` nodes the bound is not a guarantee
/// (see the module header): nobody may happen to probe the crashed node in
/// the first interval after the crash. Measured: 3 of these 300 crashes
/// took one interval more. So: nearly all within the bound, and none later
/// than one interval past it.
#[test]
fn a_crash_in_ten_nodes_is_dead_within_the_bound_nearly_always() {
    let config = PeerConfig::default();
    let bound = config.detection_bound() + MAX_LATENCY;
    let times = detection_times(10, 300);
    let over = times.iter().filter(|t| **t > bound).count();
    println!("10 nodes, 300 crashes: {}; {over} over {bound:?}", describe(&times));
    assert!(
        over * 100 <= times.len() * 2,
        "{over} of {} over {bound:?}",
        times.len()
    );
    let late = bound + config.probe_interval;
    assert!(times.iter().all(|t| *t <= late), "over {late:?}: {times:?}");
}

/// In a fleet too large for everyone to probe everyone each interval, the
/// first detectors to suspect a crashed node tell the others, who probe it
/// at once: every live node finds it dead within two of its own rounds of
/// the first, not when its schedule comes round to it (a pass of 30 / 3
/// intervals, a second). Those told do not tell again.
#[test]
fn a_crash_in_thirty_nodes_is_dead_everywhere_soon_after_the_first_finds_it() {
    let n = 30;
    let config = PeerConfig::default();
    let round = config.ack_timeout + config.indirect_timeout + MAX_LATENCY * 4;
    let spread_bound = round * config.confirm_rounds + MAX_LATENCY;
    for trial in 0..40 {
        let mut net = Net::new(n, trial);
        let victim = (trial as usize) % n;
        net.run_for(WARM_UP + Duration::from_millis(trial * 7 % 100));
        net.crashed.insert(victim);
        net.run_for(Duration::from_secs(2));
        let dead: Vec<Instant> = net
            .verdicts
            .iter()
            .filter(|(_, _, v)| matches!(v, Verdict::Dead { .. }))
            .map(|(at, _, _)| *at)
            .collect();
        assert_eq!(dead.len(), n - 1, "trial {trial}: every live node, once");
        let spread = dead[dead.len() - 1].saturating_since(dead[0]);
        assert!(
            spread <= spread_bound,
            "trial {trial}: the last found it dead {spread:?} after the first (at most {spread_bound:?})"
        );
        assert!(
            !net.hinted_by.is_empty() && net.hinted_by.len() <= n / 3,
            "trial {trial}: {} nodes passed the suspicion on",
            net.hinted_by.len()
        );
    }
}

#[test]
fn a_suspect_hint_from_a_member_starts_a_round_at_once_and_from_a_stranger_nothing() {
    let hint = |from: NodeId| Message::Suspect {
        from,
        node: id(1),
        inc: Incarnation(10),
    };
    let mut d = detector();
    assert!(d.receive(hint(NodeId::new("stranger")), Instant::ZERO).is_empty());
    let wrong_inc = Message::Suspect {
        from: id(2),
        node: id(1),
        inc: Incarnation(9),
    };
    assert!(d.receive(wrong_inc, Instant::ZERO).is_empty());
    let out = d.receive(hint(id(2)), Instant::ZERO);
    assert!(
        matches!(&out.send[..], [Outgoing { to, message: Message::Ping { .. } }] if *to == id(1)),
        "{out:?}"
    );
    assert!(out.verdicts.is_empty(), "a hint is not evidence");
    assert!(
        d.receive(hint(id(2)), Instant::ZERO).is_empty(),
        "a round is already open"
    );
}

#[test]
fn a_healthy_fleet_suspects_nobody_in_ten_minutes() {
    for n in [3, 10] {
        let mut net = Net::new(n, 7);
        net.run_for(TEN_MINUTES);
        assert!(
            net.verdicts.is_empty(),
            "{n} nodes: {:?}",
            &net.verdicts[..net.verdicts.len().min(5)]
        );
        for node in &net.nodes {
            let heard = node.heard_from_peers_since().expect("heard");
            assert!(net.now.saturating_since(heard) < PeerConfig::default().probe_interval);
        }
    }
}

#[test]
fn a_partial_partition_condemns_nobody() {
    for n in [3, 5] {
        let mut net = Net::new(n, 11);
        net.partition(0, 1);
        net.run_for(TEN_MINUTES);
        assert_eq!(net.deads(), 0, "{n} nodes: {:?}", net.verdicts);
        assert_eq!(net.suspects(), 0, "{n} nodes: {:?}", net.verdicts);
    }
}

#[test]
fn a_node_cut_off_from_all_condemns_nobody_but_is_condemned() {
    let n = 5;
    let mut net = Net::new(n, 3);
    net.run_for(WARM_UP);
    let cut_at = net.now;
    for other in 1..n {
        net.partition(0, other);
    }
    net.run_for(Duration::from_secs(60));
    let by_cut: Vec<_> = net.verdicts.iter().filter(|(_, by, _)| *by == 0).collect();
    assert!(by_cut.is_empty(), "the cut-off node concluded {by_cut:?}");
    for judge in 1..n {
        let dead = net.verdicts.iter().filter(|(_, by, v)| {
            *by == judge
                && *v
                    == Verdict::Dead {
                        node: id(0),
                        inc: net.incs[0],
                    }
        });
        assert_eq!(dead.count(), 1, "n{judge} reports the cut-off node dead once");
    }
    assert_eq!(net.deads(), n - 1, "nobody else is condemned: {:?}", net.verdicts);
    let heard = net.nodes[0].heard_from_peers_since().expect("heard before the cut");
    assert!(
        heard <= cut_at + MAX_LATENCY,
        "it can tell it is cut off: last heard at {heard}"
    );
}

#[test]
fn ten_percent_loss_condemns_nobody_in_ten_minutes() {
    let mut net = Net::new(10, 5);
    net.loss = 0.10;
    net.run_for(TEN_MINUTES);
    let rounds_estimate = 10 * PROBES_PER_INTERVAL as u128 * TEN_MINUTES.as_millis() / 100;
    println!(
        "10 nodes, 10 % loss, {}: {} messages delivered, {} suspects, {} cleared, {} dead, of ~{rounds_estimate} rounds",
        net.now,
        net.sent,
        net.suspects(),
        net.count(|v| matches!(v, Verdict::Alive { .. })),
        net.deads()
    );
    assert_eq!(
        net.deads(),
        0,
        "{:?}",
        net.verdicts
            .iter()
            .filter(|(_, _, v)| matches!(v, Verdict::Dead { .. }))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_restarted_node_is_restarted_not_dead() {
    let mut net = Net::new(3, 9);
    net.run_for(WARM_UP);
    net.crashed.insert(2);
    net.run_for(Duration::from_millis(20));
    let new_inc = Incarnation(77);
    net.restart(2, new_inc);
    net.run_for(Duration::from_secs(10));
    for judge in [0, 1] {
        let restarted: Vec<_> = net
            .verdicts
            .iter()
            .filter(|(_, by, _)| *by == judge)
            .map(|(_, _, v)| v.clone())
            .collect();
        assert_eq!(
            restarted,
            vec![Verdict::Restarted {
                node: id(2),
                inc: new_inc
            }],
            "n{judge}, once"
        );
        let state = net.nodes[judge].state_of(&id(2)).expect("member");
        assert_eq!(state.status, PeerStatus::Alive);
        assert_eq!(state.restarted_as, Some(new_inc));
    }
    assert_eq!(net.deads(), 0);
}

#[test]
fn unhealthy_acks_are_alive() {
    let mut net = Net::new(3, 4);
    net.nodes[2].set_healthy(false);
    net.run_for(Duration::from_secs(10));
    assert!(net.verdicts.is_empty(), "{:?}", net.verdicts);
    let state = net.nodes[0].state_of(&id(2)).expect("member");
    assert_eq!(state.status, PeerStatus::Alive);
    assert_eq!(state.healthy, Some(false));
    let since = net.now.saturating_since(state.last_ack_at.expect("acked"));
    assert!(
        since < PeerConfig::default().probe_interval + MAX_LATENCY * 2,
        "{since:?}"
    );
    assert_eq!(net.nodes[0].state_of(&id(1)).expect("member").healthy, Some(true));
}

// --- single-detector checks of the message rules ---

fn detector() -> Detector {
    let mut d = Detector::new(id(0), Incarnation(1), PeerConfig::default(), 1);
    d.set_members(
        [
            (id(0), Incarnation(1)),
            (id(1), Incarnation(10)),
            (id(2), Incarnation(20)),
        ],
        Instant::ZERO,
    );
    d
}

fn ping(from: NodeId, to_inc: Incarnation) -> Message {
    Message::Ping {
        seq: 5,
        from,
        from_inc: Incarnation(99),
        to: id(0),
        to_inc,
    }
}

#[test]
fn pings_are_acked_with_our_incarnation_even_from_strangers() {
    let mut d = detector();
    let ack = Message::Ack {
        seq: 5,
        from: id(0),
        from_inc: Incarnation(1),
        healthy: true,
    };
    for (from, to_inc) in [
        (id(1), Incarnation(1)),
        (id(1), Incarnation(3)),
        (NodeId::new("stranger"), Incarnation(1)),
    ] {
        let out = d.receive(ping(from.clone(), to_inc), Instant::ZERO);
        assert_eq!(
            out.send,
            vec![Outgoing {
                to: from,
                message: ack.clone()
            }]
        );
    }
    assert_eq!(d.state_of(&id(0)), None, "self is no member");
    assert_eq!(d.members().count(), 2);
}

#[test]
fn strangers_and_stale_acks_are_ignored() {
    let mut d = detector();
    let stranger = NodeId::new("stranger");
    let request = Message::PingReq {
        seq: 1,
        from: stranger.clone(),
        target: id(1),
        target_inc: Incarnation(10),
    };
    assert!(d.receive(request, Instant::ZERO).is_empty());
    let stale = Message::Ack {
        seq: 12345,
        from: id(1),
        from_inc: Incarnation(10),
        healthy: true,
    };
    assert!(d.receive(stale, Instant::ZERO).is_empty());
    assert_eq!(d.state_of(&id(1)).expect("member").last_ack_at, None);
    assert_eq!(
        d.heard_from_peers_since(),
        Some(Instant::ZERO),
        "a member's message still counts as heard"
    );
}

/// Drives one detector's round against n1 to failure: n2 nacks each round.
fn fail_round(d: &mut Detector, now: &mut Instant) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    for _ in 0..1000 {
        let wake = d.next_wake().expect("timer");
        *now = wake.max(*now);
        let out = d.tick(*now);
        verdicts.extend(out.verdicts);
        let requests: Vec<u64> = out
            .send
            .iter()
            .filter_map(|o| match &o.message {
                Message::PingReq { seq, target, .. } if *target == id(1) => Some(*seq),
                _ => None,
            })
            .collect();
        for seq in requests {
            let nack = Message::Nack {
                seq,
                from: id(2),
                target: id(1),
            };
            verdicts.extend(d.receive(nack, *now).verdicts);
        }
        // n2 stays alive: answer its pings.
        for o in &out.send {
            if let Message::Ping { seq, to, .. } = &o.message {
                if *to == id(2) {
                    let ack = Message::Ack {
                        seq: *seq,
                        from: id(2),
                        from_inc: Incarnation(20),
                        healthy: true,
                    };
                    d.receive(ack, *now);
                }
            }
        }
        if !verdicts.is_empty() {
            return verdicts;
        }
    }
    panic!("no verdict");
}

#[test]
fn two_failed_rounds_with_nacks_make_dead_once_until_the_list_changes() {
    let mut d = detector();
    let mut now = Instant::ZERO;
    assert_eq!(
        fail_round(&mut d, &mut now),
        vec![Verdict::Suspect {
            node: id(1),
            inc: Incarnation(10)
        }]
    );
    assert_eq!(
        fail_round(&mut d, &mut now),
        vec![Verdict::Dead {
            node: id(1),
            inc: Incarnation(10)
        }]
    );
    // Dead stays dead: an ack does not revive it, and it is not probed.
    let ping_from_dead = Message::Ping {
        seq: 9,
        from: id(1),
        from_inc: Incarnation(10),
        to: id(0),
        to_inc: Incarnation(1),
    };
    assert!(d.receive(ping_from_dead, now).verdicts.is_empty());
    assert_eq!(d.state_of(&id(1)).expect("member").status, PeerStatus::Dead);
    let end = now + Duration::from_secs(5);
    while now < end {
        now = d.next_wake().expect("timer").max(now);
        let out = d.tick(now);
        assert!(out.verdicts.is_empty());
        assert!(out.send.iter().all(|o| o.to != id(1)), "a dead member is not probed");
    }
    // Same list: still dead. New incarnation: fresh, and probed soon.
    d.set_members([(id(1), Incarnation(10)), (id(2), Incarnation(20))], now);
    assert_eq!(d.state_of(&id(1)).expect("member").status, PeerStatus::Dead);
    d.set_members([(id(1), Incarnation(11)), (id(2), Incarnation(20))], now);
    let state = d.state_of(&id(1)).expect("member");
    assert_eq!(
        (state.status, state.inc, state.failed_rounds),
        (PeerStatus::Alive, Incarnation(11), 0)
    );
    let mut pinged = false;
    let end = now + PeerConfig::default().probe_interval * 2;
    while now < end && !pinged {
        now = d.next_wake().expect("timer").max(now);
        pinged = d.tick(now).send.iter().any(|o| o.to == id(1));
    }
    assert!(pinged, "the new incarnation is probed within two intervals");
    d.set_members([(id(2), Incarnation(20))], now);
    assert_eq!(d.state_of(&id(1)), None);
}

#[test]
fn a_round_without_nacks_is_inconclusive() {
    let mut d = detector();
    let mut now = Instant::ZERO;
    // Nobody answers anything, for a long time: no suspicion.
    let end = now + Duration::from_secs(10);
    while now < end {
        now = d.next_wake().expect("timer").max(now);
        assert!(d.tick(now).verdicts.is_empty());
    }
    assert_eq!(d.state_of(&id(1)).expect("member").status, PeerStatus::Alive);
}

#[test]
fn an_ack_clears_suspicion_and_seqs_are_never_reused() {
    let mut d = detector();
    let mut now = Instant::ZERO;
    assert_eq!(
        fail_round(&mut d, &mut now),
        vec![Verdict::Suspect {
            node: id(1),
            inc: Incarnation(10)
        }]
    );
    let mut seqs = BTreeSet::new();
    // The next round started at once; answer it indirectly.
    let mut answered = false;
    for _ in 0..100 {
        now = d.next_wake().expect("timer").max(now);
        let out = d.tick(now);
        for o in &out.send {
            if let Message::Ping { seq, to, .. } = &o.message {
                if *to == id(1) && !answered {
                    let ack = Message::IndirectAck {
                        seq: *seq,
                        from: id(2),
                        target: id(1),
                        target_inc: Incarnation(10),
                        healthy: true,
                    };
                    let got = d.receive(ack, now);
                    assert_eq!(
                        got.verdicts,
                        vec![Verdict::Alive {
                            node: id(1),
                            inc: Incarnation(10)
                        }]
                    );
                    answered = true;
                } else if seqs.contains(seq) && *to == id(2) {
                    panic!("seq {seq} reused");
                }
                if *to == id(2) {
                    seqs.insert(*seq);
                    let ack = Message::Ack {
                        seq: *seq,
                        from: id(2),
                        from_inc: Incarnation(20),
                        healthy: true,
                    };
                    d.receive(ack, now);
                }
            }
        }
    }
    assert!(answered);
    assert_eq!(d.state_of(&id(1)).expect("member").status, PeerStatus::Alive);
}

#[test]
fn a_node_that_leaves_is_not_condemned_and_is_probed_again_as_a_new_incarnation() {
    let mut net = Net::new(4, 13);
    net.run_for(WARM_UP);
    let out = net.nodes[2].leave();
    assert_eq!(out.send.len(), 3 * 2, "two copies to each member");
    net.dispatch(2, out);
    net.crashed.insert(2);
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.deads(), 0, "{:?}", net.verdicts);
    for judge in [0, 1, 3] {
        let state = net.nodes[judge].state_of(&id(2)).expect("member");
        assert_eq!(state.status, PeerStatus::Left, "n{judge}");
    }
    // The new process registers; the member lists follow the store. Then it
    // crashes for real: it is condemned as any member.
    let new_inc = Incarnation(99);
    net.incs[2] = new_inc;
    net.restart(2, new_inc);
    let list = net.list();
    for node in &mut net.nodes {
        node.set_members(list.clone(), net.now);
    }
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.nodes[0].state_of(&id(2)).expect("member").status, PeerStatus::Alive);
    net.crashed.insert(2);
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.deads(), 3, "{:?}", net.verdicts);
}

#[test]
fn a_node_cut_off_knows_it_and_one_in_touch_does_not() {
    let mut net = Net::new(4, 21);
    net.run_for(WARM_UP);
    assert!((0..4).all(|i| !net.nodes[i].cut_off(net.now)), "all in touch");
    for other in [0, 1, 2] {
        net.partition(3, other);
    }
    net.run_for(Duration::from_secs(3));
    assert!(net.nodes[3].cut_off(net.now), "n3 hears nobody");
    assert!(
        (0..3).all(|i| !net.nodes[i].cut_off(net.now)),
        "the others hear each other"
    );
    // A lone member's silence may be its crash: no verdict on ourselves.
    let mut pair = Net::new(2, 22);
    pair.run_for(WARM_UP);
    pair.crashed.insert(1);
    pair.run_for(Duration::from_secs(5));
    assert!(!pair.nodes[0].cut_off(pair.now));
}
