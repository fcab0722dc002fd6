//! An IMDSv2 emulator for the lab and the tests: every node namespace reaches
//! one server, and each caller is answered by its source address with that
//! node's own instance id, MAC, ENI, IP, AZ, region, VPC and Auto Scaling
//! target lifecycle state.
//!
//! It implements the parts of IMDSv2 the agent relies on: the token dance
//! (`PUT /latest/api/token` with a TTL header; every `GET` needs a live
//! token, else 401) and the metadata paths of [`super`]. A bearer-token
//! control API lets the lab register nodes and flip a node's lifecycle state
//! to `Terminated` while agents run, which is how scale-in is simulated
//! (moto has no lifecycle actions and a fixed IMDS).
//!
//! Control API (all need `Authorization: Bearer <control token>`):
//! - `GET  /control/nodes`: the node table as JSON
//! - `PUT  /control/nodes/{source-ip}`: register or replace a node (JSON [`EmulatedNode`])
//! - `PUT  /control/instances/{instance-id}/lifecycle-state`: body is the new state
//! - `DELETE /control/instances/{instance-id}/lifecycle-state`: the node leaves its ASG (404 again)

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{debug, info};

const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// Real IMDS accepts token TTLs from one second to six hours.
const TOKEN_TTL_MAX_SECS: u64 = 21_600;

/// One node as IMDS describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulatedNode {
    pub instance_id: String,
    pub mac: String,
    pub eni: String,
    pub private_ip: Ipv4Addr,
    pub az: String,
    pub region: String,
    #[serde(default)]
    pub vpc_id: Option<String>,
    /// `autoscaling/target-lifecycle-state`; `None` answers 404 (not in an ASG).
    #[serde(default)]
    pub lifecycle_state: Option<String>,
}

#[derive(Debug, Default)]
struct Table {
    /// Nodes by the source address their requests come from.
    nodes: HashMap<IpAddr, EmulatedNode>,
    /// Answers sources not in `nodes` (127.0.0.1 in tests); `None` refuses them.
    fallback: Option<EmulatedNode>,
    /// Issued session tokens and when each expires.
    tokens: HashMap<String, Instant>,
}

impl Table {
    fn node_for(&self, source: IpAddr) -> Option<&EmulatedNode> {
        self.nodes.get(&source).or(self.fallback.as_ref())
    }

    fn nodes_by_instance_mut<'a>(
        &'a mut self,
        instance_id: &'a str,
    ) -> impl Iterator<Item = &'a mut EmulatedNode> + 'a {
        self.nodes
            .values_mut()
            .chain(self.fallback.as_mut())
            .filter(move |n| n.instance_id == instance_id)
    }
}

#[derive(Debug)]
struct Shared {
    table: RwLock<Table>,
    /// Secret for the control API: the lab's processes share one machine.
    control_token: String,
    /// Metadata GETs answered, so tests can prove IMDS was (not) consulted.
    metadata_requests: AtomicU64,
    /// Seed for session tokens; they need to be unguessable only in spirit.
    token_hasher: RandomState,
    token_counter: AtomicU64,
}

/// The emulator's shared state; cheap to clone, all clones see one table.
#[derive(Clone, Debug)]
pub struct Emulator {
    shared: Arc<Shared>,
}

impl Emulator {
    pub fn new(control_token: impl Into<String>) -> Self {
        Self {
            shared: Arc::new(Shared {
                table: RwLock::new(Table::default()),
                control_token: control_token.into(),
                metadata_requests: AtomicU64::new(0),
                token_hasher: RandomState::new(),
                token_counter: AtomicU64::new(0),
            }),
        }
    }

    // A panic while holding the lock leaves the table consistent (every
    // write is a single insert), so a poisoned lock is safe to reuse.
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.shared.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.shared.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers (or replaces) the node whose requests come from `source`.
    pub fn add_node(&self, source: IpAddr, node: EmulatedNode) {
        self.write().nodes.insert(source.to_canonical(), node);
    }

    /// Sets the node that answers unknown sources.
    pub fn set_fallback(&self, node: Option<EmulatedNode>) {
        self.write().fallback = node;
    }

    /// Sets `autoscaling/target-lifecycle-state` for every node with this
    /// instance id; `None` makes the path answer 404. Returns whether any
    /// node matched.
    pub fn set_lifecycle_state(&self, instance_id: &str, state: Option<&str>) -> bool {
        let mut table = self.write();
        let mut found = false;
        for node in table.nodes_by_instance_mut(instance_id) {
            node.lifecycle_state = state.map(str::to_string);
            found = true;
        }
        found
    }

    /// How many metadata GETs were answered (with any status).
    pub fn metadata_requests(&self) -> u64 {
        self.shared.metadata_requests.load(Ordering::Relaxed)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/latest/api/token", put(issue_token))
            .route("/latest/meta-data/{*path}", get(metadata))
            .route("/control/nodes", get(list_nodes))
            .route("/control/nodes/{source}", put(register_node))
            .route(
                "/control/instances/{instance_id}/lifecycle-state",
                put(set_lifecycle).delete(clear_lifecycle),
            )
            .with_state(self.clone())
    }

    /// Serves until `shutdown` completes. Callers bind the listener, so tests
    /// use `127.0.0.1:0` and the lab picks its address.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        info!(addr = ?listener.local_addr().ok(), "IMDS emulator listening");
        axum::serve(
            listener,
            self.router().into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }

    fn new_token(&self) -> String {
        let n = self.shared.token_counter.fetch_add(1, Ordering::Relaxed);
        let hasher = &self.shared.token_hasher;
        format!("{:016x}{:016x}", hasher.hash_one(n), hasher.hash_one(!n))
    }

    fn authorized_control(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return false;
        };
        let Some(given) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        constant_time_eq(given, self.shared.control_token.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn issue_token(
    State(emu): State<Emulator>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    // Real IMDS refuses token requests that went through a proxy.
    if headers.contains_key("x-forwarded-for") {
        return (StatusCode::FORBIDDEN, "forwarded token requests are refused").into_response();
    }
    let ttl_secs = headers
        .get(TOKEN_TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ttl| (1..=TOKEN_TTL_MAX_SECS).contains(ttl));
    let Some(ttl_secs) = ttl_secs else {
        return (StatusCode::BAD_REQUEST, "missing or invalid token TTL").into_response();
    };
    let token = emu.new_token();
    {
        let mut table = emu.write();
        if table.node_for(peer.ip().to_canonical()).is_none() {
            return (StatusCode::FORBIDDEN, "unknown source address").into_response();
        }
        let now = Instant::now();
        table.tokens.retain(|_, expires| *expires > now);
        table.tokens.insert(token.clone(), now + Duration::from_secs(ttl_secs));
    }
    debug!(%peer, ttl_secs, "issued IMDS token");
    ([(TOKEN_TTL_HEADER, ttl_secs.to_string())], token).into_response()
}

async fn metadata(
    State(emu): State<Emulator>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    emu.shared.metadata_requests.fetch_add(1, Ordering::Relaxed);
    let table = emu.read();
    let token_ok = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|token| table.tokens.get(token))
        .is_some_and(|expires| *expires > Instant::now());
    if !token_ok {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(node) = table.node_for(peer.ip().to_canonical()) else {
        return (StatusCode::FORBIDDEN, "unknown source address").into_response();
    };
    match lookup(node, path.trim_end_matches('/')) {
        Some(value) => value.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The metadata value at `path` (relative to `/latest/meta-data/`).
fn lookup(node: &EmulatedNode, path: &str) -> Option<String> {
    let value = match path {
        "instance-id" => node.instance_id.clone(),
        "mac" => node.mac.clone(),
        "local-ipv4" => node.private_ip.to_string(),
        "placement/availability-zone" => node.az.clone(),
        "placement/region" => node.region.clone(),
        "autoscaling/target-lifecycle-state" => node.lifecycle_state.clone()?,
        other => {
            let rest = other.strip_prefix("network/interfaces/macs/")?;
            let (mac, leaf) = rest.split_once('/')?;
            if !mac.eq_ignore_ascii_case(&node.mac) {
                return None;
            }
            match leaf {
                "interface-id" => node.eni.clone(),
                "local-ipv4s" => node.private_ip.to_string(),
                "vpc-id" => node.vpc_id.clone()?,
                _ => return None,
            }
        }
    };
    Some(value)
}

#[derive(Serialize)]
struct NodeEntry {
    source: Option<IpAddr>,
    #[serde(flatten)]
    node: EmulatedNode,
}

async fn list_nodes(State(emu): State<Emulator>, headers: HeaderMap) -> Response {
    if !emu.authorized_control(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let table = emu.read();
    let mut entries: Vec<NodeEntry> = table
        .nodes
        .iter()
        .map(|(source, node)| NodeEntry {
            source: Some(*source),
            node: node.clone(),
        })
        .collect();
    entries.sort_by_key(|e| e.source);
    if let Some(node) = &table.fallback {
        entries.push(NodeEntry {
            source: None,
            node: node.clone(),
        });
    }
    Json(entries).into_response()
}

async fn register_node(
    State(emu): State<Emulator>,
    Path(source): Path<IpAddr>,
    headers: HeaderMap,
    Json(node): Json<EmulatedNode>,
) -> Response {
    if !emu.authorized_control(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    info!(%source, instance_id = %node.instance_id, "emulator: node registered");
    emu.add_node(source, node);
    StatusCode::NO_CONTENT.into_response()
}

async fn set_lifecycle(
    State(emu): State<Emulator>,
    Path(instance_id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !emu.authorized_control(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let state = body.trim();
    if state.is_empty() {
        return (StatusCode::BAD_REQUEST, "empty lifecycle state").into_response();
    }
    lifecycle_response(&emu, &instance_id, Some(state))
}

async fn clear_lifecycle(State(emu): State<Emulator>, Path(instance_id): Path<String>, headers: HeaderMap) -> Response {
    if !emu.authorized_control(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    lifecycle_response(&emu, &instance_id, None)
}

fn lifecycle_response(emu: &Emulator, instance_id: &str, state: Option<&str>) -> Response {
    if emu.set_lifecycle_state(instance_id, state) {
        info!(instance_id, ?state, "emulator: lifecycle state set");
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::NOT_FOUND, format!("no node with instance id {instance_id}")).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> EmulatedNode {
        EmulatedNode {
            instance_id: "i-1".into(),
            mac: "0e:00:00:00:00:01".into(),
            eni: "eni-1".into(),
            private_ip: Ipv4Addr::new(10, 0, 1, 10),
            az: "us-east-1a".into(),
            region: "us-east-1".into(),
            vpc_id: None,
            lifecycle_state: None,
        }
    }

    #[test]
    fn paths_resolve_per_node() {
        let n = node();
        assert_eq!(lookup(&n, "instance-id").as_deref(), Some("i-1"));
        assert_eq!(
            lookup(&n, "network/interfaces/macs/0E:00:00:00:00:01/interface-id").as_deref(),
            Some("eni-1")
        );
        assert_eq!(
            lookup(&n, "network/interfaces/macs/0e:00:00:00:00:02/interface-id"),
            None
        );
        assert_eq!(lookup(&n, "network/interfaces/macs/0e:00:00:00:00:01/vpc-id"), None);
        assert_eq!(lookup(&n, "autoscaling/target-lifecycle-state"), None);
        assert_eq!(lookup(&n, "ami-id"), None);
    }

    #[test]
    fn control_token_must_match_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
