//! What a simulation runs: the fleet, its timings and faults
//! ([`SimConfig`]), and the rules a run may break on purpose ([`Sabotage`]).

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::faults::{random_schedule, Fault, Mix, ScheduledFault, Variant};
use super::throughput::StoreThroughput;
use crate::config::LeaseConfig;
use crate::machine::{Pacing, TABLE_BACKOFF_CAP};
use crate::peers::PeerConfig;

/// Ways to break the protocol on purpose, to prove the checks catch it.
/// Each undoes one rule, the way the code behaved before the rule existed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Take over a shard on the shard's condition alone, without checking
    /// that its owner is still gone as observed: a zombie that woke up and
    /// confirmed its shards loses them while it still writes routes.
    TakeoverWithoutNodeCheck,
    /// A read with one item it cannot use fails as a whole.
    StrictReads,
    /// A heartbeat that finds its item missing reports another process:
    /// the agent exits (as on a re-created table, before).
    MissingItemIsSuperseded,
    /// Observers judge peers by their own lease TTL only.
    OwnTtlOnly,
    /// A claim of a free shard starts its epoch at 1 again.
    EpochsRestart,
    /// Nodes never see where the routes of free shards point, so a
    /// re-created table is re-formed from scratch.
    RoutesUnseen,
    /// As the driver once was: the fence is checked before a call's first
    /// attempt only, and the call is bounded by the SDK's timeout, not by
    /// the lease: a retry goes out unchecked after the lease ended.
    FenceOncePerCall,
    /// As observers once were: one read of the node items at a time, and
    /// blind whenever two reads *return* more than half a lease apart: a
    /// store that is slow or fails now and then restarts every clock.
    BlindByReturnTimes,
    /// As a drain once ended: as soon as nothing was held and no push was
    /// left, though pushes that ran out of time left routes pointing at the
    /// node told it may terminate.
    DrainIgnoresRoutes,
    /// Shards taken from an evicted node are not read back once its lease
    /// is over: a route it wrote late stays until the next reconcile.
    NoRecheckAfterEviction,
    /// As nodes once were: a shard held across a re-registration of the
    /// node's item, or found ours in the table, has its routes written
    /// without being claimed again first.
    NoReclaim,
    /// As claims of free shards once were: a wait that started over (a
    /// lease back after a lapse, a table seen missing) planned nothing
    /// again, so the claims planned before went out at once; and a claim
    /// went above whatever epoch floors were read last, however long ago.
    ClaimsOnStaleView,
    /// As re-registrations once were: the put writes one more than the
    /// last put, so an item lost with its table and written anew climbs
    /// back through counters observers saw before, and a takeover judged
    /// on a sighting from before the loss passes its `Unchanged` check.
    CountersRestart,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub shards: usize,
    pub route_tables: usize,
    pub lease: LeaseConfig,
    /// Nodes whose configuration differs from the base one at start.
    pub variants: BTreeMap<usize, Variant>,
    /// Each call's request and response legs each take a uniform share of
    /// `[min, max] / 2`...
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// ...except, with this probability, a leg that takes up to this long
    /// (a stalled request, a slow retry).
    pub latency_tail: Option<(f64, Duration)>,
    /// Time to settle before the first fault.
    pub warmup: Duration,
    pub faults: Vec<ScheduledFault>,
    /// Quiet time after the last fault ends, before the run stops.
    pub cooldown: Duration,
    /// Stop sooner, once the faults are over and the fleet has been settled
    /// this long (every shard with a live owner where every node's targets
    /// want it, every route pointing at its owner, no shard moving), as
    /// seen at the probes: the scale runs' convergence bound is minutes
    /// past when a large fleet is done. `None`: run to the bound.
    pub end_once_settled_for: Option<Duration>,
    pub sabotage: Option<Sabotage>,
    /// How fast each node may make mutating EC2 calls.
    pub pacing: Pacing,
    /// Peer probes between the nodes (`None`: nodes judge each other by
    /// their leases only, as an agent with probes off does).
    pub peers: Option<PeerConfig>,
    /// Record every machine event and fault in [`Report::trace`].
    pub trace: bool,
    /// Read the world's counters this often into [`Report::probes`].
    pub probe_every: Option<Duration>,
    /// Added to the convergence bound: the time the account's EC2 bucket
    /// takes to let through the route writes a large event needs (the
    /// bound's own term counts each node's pacing only).
    pub bucket_allowance: Duration,
    /// DynamoDB's throughput limits (`None`: the store takes whatever it
    /// is sent, as a small fleet never comes near them).
    pub store_throughput: Option<StoreThroughput>,
    /// The account's EC2 bucket refuses nothing before this instant, and
    /// starts full from it. A scale run's fleet formed long before the
    /// event it measures: its start-up writes need not trickle through the
    /// bucket at 5 a second for an hour of simulated time first.
    /// `Duration::ZERO` (the default): the bucket limits from the start.
    pub bucket_from: Duration,
    /// Datagrams between peers on an intact link (not cut, neither end
    /// isolated, no loss) to a running node are handled at once, within
    /// the event that sends them, instead of as events of their own after
    /// 0.2 to 2 ms. A probe of a healthy peer is then answered within its
    /// round's own event; a datagram to a crashed or paused node, or on a
    /// faulty link, goes as before. Large fleets spend most of their events
    /// on such probes.
    pub prompt_datagrams: bool,
}

impl SimConfig {
    /// 5 nodes, 64 shards, 2 route tables, default lease, no faults.
    pub fn small(seed: u64) -> Self {
        Self {
            seed,
            nodes: 5,
            shards: 64,
            route_tables: 2,
            lease: LeaseConfig::HOT,
            variants: BTreeMap::new(),
            latency_min: Duration::from_millis(4),
            latency_max: Duration::from_millis(60),
            latency_tail: None,
            warmup: Duration::from_secs(10),
            faults: Vec::new(),
            cooldown: Duration::from_secs(40),
            end_once_settled_for: None,
            sabotage: None,
            pacing: Pacing::default(),
            peers: Some(PeerConfig::default()),
            trace: false,
            probe_every: None,
            bucket_allowance: Duration::ZERO,
            store_throughput: None,
            bucket_from: Duration::ZERO,
            prompt_datagrams: false,
        }
    }

    /// The configuration every node runs unless told otherwise.
    pub fn base_variant(&self) -> Variant {
        Variant {
            layout_version: 0,
            route_tables: self.route_tables,
            lease: self.lease.clone(),
        }
    }

    /// Adds `count` random faults of `mix` spread over `window` after the
    /// warm-up.
    pub fn with_random_faults(mut self, window: Duration, count: usize) -> Self {
        self.faults = self.random_faults(window, count, Mix::Classic);
        self
    }

    pub fn with_random_faults_of(mut self, window: Duration, count: usize, mix: Mix) -> Self {
        self.faults = self.random_faults(window, count, mix);
        self
    }

    fn random_faults(&self, window: Duration, count: usize, mix: Mix) -> Vec<ScheduledFault> {
        let mut rng = SmallRng::seed_from_u64(self.seed ^ 0x5eed_fa17);
        random_schedule(
            &mut rng,
            self.nodes,
            self.shards,
            &self.lease,
            self.warmup,
            window,
            count,
            mix,
        )
    }

    /// When the last fault has ended.
    pub fn faults_end(&self) -> Duration {
        self.faults
            .iter()
            .map(|f| f.at + f.fault.length())
            .max()
            .unwrap_or(self.warmup)
            .max(self.warmup)
    }

    /// The longest lease any node runs with.
    pub fn longest_lease(&self) -> LeaseConfig {
        let variants = self
            .variants
            .values()
            .chain(self.faults.iter().filter_map(|f| match &f.fault {
                Fault::Reconfigure { variant, .. } => Some(variant),
                _ => None,
            }));
        variants
            .map(|v| &v.lease)
            .chain([&self.lease])
            .max_by_key(|l| l.lease_ttl + l.reconcile_interval)
            .cloned()
            .unwrap_or_else(|| self.lease.clone())
    }

    /// The promise: after faults stop, everything is owned by a live node
    /// with routes pointing at it within this long: a lease to notice what
    /// changed, a reconcile to find what drifted, and the EC2 calls to point
    /// one node's share of the routes at it, at its pacing's rate.
    pub fn convergence_bound(&self) -> Duration {
        let lease = self.longest_lease();
        // The fewest nodes the fleet may end with share the routes.
        let joins = self.faults.iter().filter(|f| f.fault == Fault::Join).count();
        // With peer probes, a node paused past the detection time is
        // evicted and comes back empty, as a new node: until rebalancing
        // catches up, the others write its routes.
        let evicted = |f: &Fault| match (f, self.peers) {
            (Fault::Pause { length, .. }, Some(peers)) => *length >= peers.probe_interval,
            _ => false,
        };
        let leaves = self
            .faults
            .iter()
            .filter(|f| matches!(f.fault, Fault::Crash { .. } | Fault::Drain { .. }) || evicted(&f.fault))
            .count();
        let last_nodes = (self.nodes + joins).saturating_sub(leaves).max(1);
        let share = (self.shards * self.route_tables).div_ceil(last_nodes) as f64;
        let writes = Duration::from_secs_f64(share / self.pacing.calls_per_second);
        // A table that failed is asked again only when its backoff ends.
        let table_backoff = if self.faults.iter().any(|f| matches!(f.fault, Fault::TableFails { .. })) {
            TABLE_BACKOFF_CAP
        } else {
            Duration::ZERO
        };
        lease.lease_ttl
            + lease.scan_interval * 2
            + lease.reconcile_interval
            + writes
            + table_backoff
            + self.bucket_allowance
    }
}
