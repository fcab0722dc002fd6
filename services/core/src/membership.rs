//! Who is in the fleet, as one observer sees it, and what they agree on.
//!
//! [`membership`] is the one rule every node and every dashboard applies to
//! a snapshot of the node items: which nodes are members and with what
//! [`Role`], which are gone (their shards may be taken over, on the
//! condition the store must check), which shards every member serves
//! (*agreed*) and which only some do (*disputed*: a VIP list being rolled
//! out node by node), and which route tables the fleet maintains.
//!
//! | node item                                   | counts as                 |
//! |---------------------------------------------|---------------------------|
//! | counter still, or item missing, for a TTL   | gone                      |
//! | `dead` (marked by an observer), not gone    | not a member              |
//! | `active`, configuration known               | member, takes             |
//! | `starting`, unknown state, unreadable item, configuration or layout unknown, item missing for less than a TTL | member, keeps |
//! | `draining`, `unhealthy`                     | member, leaves            |
//!
//! Unhealthy members take when no member takes: a struggling haproxy beats
//! a black hole.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::assign::{Member, Role};
use crate::layout::{LayoutId, ShardLayout};
use crate::liveness::{NodeCheck, Observer};
use crate::types::{NodeId, NodeRecord, NodeState, RouteTableId, ShardId};

/// This node, as the rule needs it.
#[derive(Clone, Copy, Debug)]
pub struct Me<'a> {
    pub id: &'a NodeId,
    pub weight: u32,
    pub state: NodeState,
    pub layout: &'a Arc<ShardLayout>,
    pub tables: &'a [RouteTableId],
    pub lease_ttl: Duration,
}

/// What this node knows of the others.
#[derive(Clone, Copy, Debug)]
pub struct Peers<'a> {
    /// The node items as last read, plus the last record of nodes whose
    /// item has gone missing since.
    pub nodes: &'a BTreeMap<NodeId, NodeRecord>,
    /// Nodes whose item exists but could not be read.
    pub unreadable: &'a BTreeSet<NodeId>,
    pub observer: &'a Observer,
    /// Every layout read so far, by fingerprint.
    pub layouts: &'a BTreeMap<LayoutId, Arc<ShardLayout>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Sorted by id, each once; this node included.
    pub members: Vec<Member>,
    /// Nodes whose shards may be taken over, with the condition to check.
    pub gone: BTreeMap<NodeId, NodeCheck>,
    /// Shards every member whose layout we know serves.
    pub agreed: Arc<BTreeSet<ShardId>>,
    /// Shards some members serve and others do not.
    pub disputed: Arc<BTreeSet<ShardId>>,
    /// Every member's layout is known: `agreed` and `disputed` are final.
    pub layouts_complete: bool,
    /// Layouts we must read before we know what their members serve.
    pub unknown_layouts: BTreeSet<LayoutId>,
    /// The route tables any member maintains, ours included, sorted.
    pub tables: Vec<RouteTableId>,
    /// The layout of every member whose layout we know, ours included.
    pub layouts: BTreeMap<NodeId, Arc<ShardLayout>>,
}

impl Membership {
    pub fn role_of(&self, node: &NodeId) -> Option<Role> {
        // Searched, not scanned: the targets ask it of every owned shard.
        let at = self.members.binary_search_by(|m| m.id.cmp(node)).ok()?;
        Some(self.members[at].role)
    }

    /// The member that does the fleet's chores (marking nodes dead,
    /// retiring shards nobody serves): the lowest id that is not leaving,
    /// so one write is spent per chore.
    pub fn coordinator(&self) -> Option<&NodeId> {
        self.members.iter().find(|m| m.role != Role::Leaves).map(|m| &m.id)
    }

    /// Shards served by some member.
    pub fn served(&self) -> impl Iterator<Item = &ShardId> {
        self.agreed.iter().chain(self.disputed.iter())
    }

    pub fn serves(&self, shard: ShardId) -> bool {
        self.agreed.contains(&shard) || self.disputed.contains(&shard)
    }

    /// Where a disputed shard goes: its owner keeps it while it is a member
    /// that serves it (or may: a keeper whose layout we do not know);
    /// otherwise the member that takes and serves it and ranks it highest.
    /// No quotas: disputes last only while a VIP list is rolled out, and
    /// the agreed shards' quotas must not depend on them.
    pub fn disputed_target(&self, shard: ShardId, owner: Option<&NodeId>) -> Option<NodeId> {
        let serves = |id: &NodeId| self.layouts.get(id).is_some_and(|l| l.contains(shard));
        if let Some(owner) = owner {
            let keeps = match self.role_of(owner) {
                Some(Role::Takes) => serves(owner),
                Some(Role::Keeps) => serves(owner) || !self.layouts.contains_key(owner),
                _ => false,
            };
            if keeps {
                return Some(owner.clone());
            }
        }
        self.members
            .iter()
            .filter(|m| m.role == Role::Takes && serves(&m.id))
            .max_by_key(|m| (crate::assign::rank(shard.key(), &m.id), &m.id))
            .map(|m| m.id.clone())
    }
}

/// The role a node's own state gives it, before the unhealthy fallback.
pub fn role_of_state(state: NodeState) -> Option<Role> {
    match state {
        NodeState::Active => Some(Role::Takes),
        NodeState::Starting | NodeState::Unrecognized => Some(Role::Keeps),
        NodeState::Draining | NodeState::Unhealthy => Some(Role::Leaves),
        NodeState::Dead => None,
    }
}

pub fn membership(me: Me<'_>, peers: Peers<'_>) -> Membership {
    let mut out = Membership::default();
    let mut unhealthy = Vec::new();
    let mut layouts: Vec<&ShardLayout> = vec![me.layout.as_ref()];
    let mut tables: BTreeSet<RouteTableId> = me.tables.iter().cloned().collect();
    out.layouts_complete = true;

    // Both in id order: merged as they come rather than gathered in a set
    // (this runs on every read of the node items, over every node).
    // Each id comes with its record, if we have one, and whether its item
    // is unreadable now.
    let mut unreadable = peers.unreadable.iter().peekable();
    let mut known = peers.nodes.iter().peekable();
    let ids = std::iter::from_fn(|| match (known.peek(), unreadable.peek()) {
        (Some((a, _)), Some(b)) if b < a => unreadable.next().map(|id| (id, None, true)),
        (Some((a, _)), Some(b)) if a == b => {
            unreadable.next();
            known.next().map(|(id, record)| (id, Some(record), true))
        }
        (Some(_), _) => known.next().map(|(id, record)| (id, Some(record), false)),
        (None, _) => unreadable.next().map(|id| (id, None, true)),
    });
    // Gathered in id order and made a map at once.
    let mut member_layouts = vec![(me.id.clone(), me.layout.clone())];
    // The route tables of the last member looked at: most name the same.
    let mut last_tables: &[RouteTableId] = me.tables;
    for (id, record, is_unreadable) in ids {
        if id == me.id {
            continue;
        }
        if let Some(check) = peers.observer.gone_check(id, me.lease_ttl) {
            out.gone.insert(id.clone(), check);
            continue;
        }
        let Some(record) = record.filter(|_| !is_unreadable) else {
            // An item we cannot read: it exists, so the node is not gone;
            // what it runs we cannot tell.
            out.members.push(Member {
                id: id.clone(),
                weight: 1,
                role: Role::Keeps,
            });
            out.layouts_complete = false;
            continue;
        };
        let Some(mut role) = role_of_state(record.state) else {
            continue; // marked dead, not gone yet: a member of nothing
        };
        // A node that may be re-registering, or that serves we know not
        // what, keeps what it has and is given nothing.
        let at_most_keeps = |role: Role| if role == Role::Takes { Role::Keeps } else { role };
        if peers.observer.is_missing(id) {
            role = at_most_keeps(role);
        }
        match &record.config {
            Some(config) => {
                // Copied only when new: every member names the same few.
                if config.route_tables.as_slice() != last_tables {
                    for table in &config.route_tables {
                        if !tables.contains(table) {
                            tables.insert(table.clone());
                        }
                    }
                    last_tables = &config.route_tables;
                }
                match peers.layouts.get(&config.layout) {
                    Some(layout) => {
                        layouts.push(layout);
                        member_layouts.push((id.clone(), layout.clone()));
                    }
                    None => {
                        out.unknown_layouts.insert(config.layout.clone());
                        out.layouts_complete = false;
                        role = at_most_keeps(role);
                    }
                }
            }
            None => {
                out.layouts_complete = false;
                role = at_most_keeps(role);
            }
        }
        if record.state == NodeState::Unhealthy && role == Role::Leaves {
            unhealthy.push(out.members.len());
        }
        out.members.push(Member {
            id: id.clone(),
            weight: record.info.weight,
            role,
        });
    }
    out.layouts = member_layouts.into_iter().collect();
    let my_role = role_of_state(me.state).unwrap_or(Role::Leaves);
    if me.state == NodeState::Unhealthy {
        unhealthy.push(out.members.len());
    }
    out.members.push(Member {
        id: me.id.clone(),
        weight: me.weight,
        role: my_role,
    });
    if !out.members.iter().any(|m| m.role == Role::Takes) {
        for i in unhealthy {
            out.members[i].role = Role::Takes;
        }
    }
    out.members.sort_by(|a, b| a.id.cmp(&b.id));

    // The common case, every member on one layout, costs nothing per shard.
    // Members on our layout mostly share our copy of it: the pointer
    // answers before the fingerprints are compared.
    if layouts
        .iter()
        .all(|l| std::ptr::eq(*l, me.layout.as_ref()) || l.same_as(me.layout.as_ref()))
    {
        out.agreed = me.layout.shards().clone();
    } else {
        let mut agreed: BTreeSet<ShardId> = me.layout.shards().as_ref().clone();
        let mut served: BTreeSet<ShardId> = agreed.clone();
        for layout in &layouts[1..] {
            agreed.retain(|s| layout.contains(*s));
            served.extend(layout.ids());
        }
        out.disputed = Arc::new(served.difference(&agreed).copied().collect());
        out.agreed = Arc::new(agreed);
    }
    out.tables = tables.into_iter().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Instant;
    use crate::types::{EniId, Incarnation, NodeConfig, NodeInfo, Vip};

    const TTL: Duration = Duration::from_secs(3);

    fn layout(vips: &[&str]) -> ShardLayout {
        let vips: Vec<Vip> = vips.iter().map(|v| v.parse().unwrap()).collect();
        ShardLayout::from_vips(&vips).unwrap()
    }

    fn record(id: &str, state: NodeState, layout: Option<&ShardLayout>, tables: &[&str]) -> NodeRecord {
        NodeRecord {
            info: Arc::new(NodeInfo {
                id: NodeId::new(id),
                eni: EniId(format!("eni-{id}")),
                az: "a".into(),
                addr: String::new(),
                weight: 1,
                version: String::new(),
            }),
            hb: 1,
            inc: Incarnation(1),
            state,
            config: layout.map(|l| {
                Arc::new(NodeConfig {
                    layout: l.id(),
                    route_tables: tables.iter().map(|t| RouteTableId(t.to_string())).collect(),
                    lease_ttl: TTL,
                    heartbeat_interval: TTL / 3,
                    peer_port: None,
                })
            }),
            epoch_floor: 0,
            evicted_by: None,
        }
    }

    struct World {
        nodes: BTreeMap<NodeId, NodeRecord>,
        unreadable: BTreeSet<NodeId>,
        observer: Observer,
        layouts: BTreeMap<LayoutId, Arc<ShardLayout>>,
    }

    impl World {
        fn new(records: Vec<NodeRecord>, known: &[&ShardLayout]) -> Self {
            let mut observer = Observer::default();
            observer.observe(&records, &BTreeSet::new(), [], Instant::ZERO, Instant::ZERO, TTL);
            Self {
                nodes: records.into_iter().map(|r| (r.info.id.clone(), r)).collect(),
                unreadable: BTreeSet::new(),
                observer,
                layouts: known.iter().map(|l| (l.id(), Arc::new((*l).clone()))).collect(),
            }
        }

        fn membership(&self, me: &NodeId, mine: &ShardLayout, state: NodeState) -> Membership {
            let tables: Vec<RouteTableId> = self
                .nodes
                .get(me)
                .and_then(|r| r.config.as_ref())
                .map_or_else(|| vec![RouteTableId("rtb-1".into())], |c| c.route_tables.clone());
            let mine = Arc::new(mine.clone());
            membership(
                Me {
                    id: me,
                    weight: 1,
                    state,
                    layout: &mine,
                    tables: &tables,
                    lease_ttl: TTL,
                },
                Peers {
                    nodes: &self.nodes,
                    unreadable: &self.unreadable,
                    observer: &self.observer,
                    layouts: &self.layouts,
                },
            )
        }
    }

    fn roles(m: &Membership) -> Vec<(String, Role)> {
        m.members.iter().map(|x| (x.id.to_string(), x.role)).collect()
    }

    fn shards(vips: &[&str]) -> BTreeSet<ShardId> {
        vips.iter().map(|v| v.parse().unwrap()).collect()
    }

    #[test]
    fn a_vip_list_rolled_out_node_by_node_is_disputed_only_where_it_differs() {
        let old = layout(&["10.200.0.1", "10.200.0.2"]);
        let new = layout(&["10.200.0.2", "10.200.0.3"]);
        let world = World::new(
            vec![
                record("a", NodeState::Active, Some(&old), &["rtb-1"]),
                record("b", NodeState::Active, Some(&new), &["rtb-1", "rtb-2"]),
            ],
            &[&old, &new],
        );
        let seen_by_a = world.membership(&NodeId::new("a"), &old, NodeState::Active);
        let seen_by_b = world.membership(&NodeId::new("b"), &new, NodeState::Active);
        for m in [&seen_by_a, &seen_by_b] {
            assert_eq!(*m.agreed, shards(&["10.200.0.2"]));
            assert_eq!(*m.disputed, shards(&["10.200.0.1", "10.200.0.3"]));
            assert!(m.layouts_complete);
            let tables: Vec<&str> = m.tables.iter().map(|t| t.0.as_str()).collect();
            assert_eq!(tables, ["rtb-1", "rtb-2"], "the union of the tables");
        }
        assert_eq!(seen_by_a.members, seen_by_b.members, "both see the same fleet");
    }

    #[test]
    fn nodes_we_cannot_read_keep_and_take_nothing() {
        let mine = layout(&["10.200.0.1"]);
        let unknown = layout(&["10.200.0.9"]);
        let mut world = World::new(
            vec![
                record("legacy", NodeState::Active, None, &[]),
                record("later", NodeState::Unrecognized, Some(&mine), &[]),
                record("unread-layout", NodeState::Active, Some(&unknown), &[]),
                record("ok", NodeState::Active, Some(&mine), &[]),
            ],
            &[&mine],
        );
        world.unreadable.insert(NodeId::new("junk"));
        let m = world.membership(&NodeId::new("me"), &mine, NodeState::Starting);
        assert_eq!(
            roles(&m),
            [
                ("junk".into(), Role::Keeps),
                ("later".into(), Role::Keeps),
                ("legacy".into(), Role::Keeps),
                ("me".into(), Role::Keeps),
                ("ok".into(), Role::Takes),
                ("unread-layout".into(), Role::Keeps),
            ]
        );
        assert_eq!(m.unknown_layouts, BTreeSet::from([unknown.id()]));
        assert!(!m.layouts_complete);
        assert_eq!(*m.agreed, shards(&["10.200.0.1"]), "unknown layouts dispute nothing");
    }

    #[test]
    fn gone_dead_draining_and_the_unhealthy_fallback() {
        let l = layout(&["10.200.0.1"]);
        let mut world = World::new(
            vec![
                record("dead", NodeState::Dead, Some(&l), &[]),
                record("leaving", NodeState::Draining, Some(&l), &[]),
                record("sick", NodeState::Unhealthy, Some(&l), &[]),
                record("still", NodeState::Active, Some(&l), &[]),
            ],
            &[&l],
        );
        let records: Vec<NodeRecord> = world.nodes.values().cloned().collect();
        // "still" never moves its counter; the others heartbeat.
        for step in 1..=12u64 {
            let moving: Vec<NodeRecord> = records
                .iter()
                .map(|r| NodeRecord {
                    hb: if r.info.id.as_str() == "still" { 1 } else { 1 + step },
                    ..r.clone()
                })
                .collect();
            world.observer.observe(
                &moving,
                &BTreeSet::new(),
                [],
                Instant::from_millis(step * 250),
                Instant::from_millis(step * 250),
                TTL,
            );
        }
        let m = world.membership(&NodeId::new("me"), &l, NodeState::Draining);
        assert_eq!(
            m.gone,
            BTreeMap::from([(
                NodeId::new("still"),
                NodeCheck::Unchanged {
                    hb: 1,
                    inc: Incarnation(1)
                }
            )])
        );
        assert_eq!(
            roles(&m),
            [
                ("leaving".into(), Role::Leaves),
                ("me".into(), Role::Leaves),
                ("sick".into(), Role::Takes),
            ],
            "nobody healthy is left, so the unhealthy one takes; the dead one is no member"
        );
        assert_eq!(m.coordinator(), Some(&NodeId::new("sick")));
    }
}
