//! The lab's instance metadata service: the agent crate's IMDSv2 emulator
//! ([`vipfleet_agent::identity::emulator`]) run as a lab process
//! (`vipfleet-loadtest lab imds`) in the host namespace on the host's bridge
//! address. Each node namespace reaches it from its own address, which is
//! how the emulator tells nodes apart.
//!
//! The node table is loaded at start from a JSON file (so a restarted
//! emulator knows the fleet), and the lab and the harness change it while
//! it runs through the control API: [`register`] (scale-out) and
//! [`set_lifecycle`] (scale-in: `Terminated` makes the agent drain).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use vipfleet_agent::identity::emulator::{EmulatedNode, Emulator};

use super::http;

/// The control API answers at once; anything slower is a dead emulator.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// `target-lifecycle-state` of a node serving in its group.
pub const IN_SERVICE: &str = "InService";
/// The state that tells an agent its instance is being scaled in.
#[allow(dead_code)] // for the fault harness
pub const TERMINATED: &str = "Terminated";

#[derive(Args, Debug)]
pub struct ImdsArgs {
    /// Address to listen on (the host's bridge address in the lab).
    #[arg(long)]
    pub listen: SocketAddr,
    /// File holding the control API's bearer token.
    #[arg(long)]
    pub token_file: PathBuf,
    /// JSON list of `{ "source": ip, "node": {...} }` to serve from the start.
    #[arg(long)]
    pub nodes_file: PathBuf,
}

/// One node of the table: requests from `source` are answered as `node`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub source: Ipv4Addr,
    pub node: EmulatedNode,
}

pub fn read_nodes(path: &Path) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn write_nodes(path: &Path, entries: &[Entry]) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(entries)?).with_context(|| format!("writing {}", path.display()))
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(args: ImdsArgs) -> Result<()> {
    let token =
        std::fs::read_to_string(&args.token_file).with_context(|| format!("reading {}", args.token_file.display()))?;
    let emulator = Emulator::new(token.trim());
    for entry in read_nodes(&args.nodes_file)? {
        emulator.add_node(entry.source.into(), entry.node);
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    emulator.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers the default action (exit) still applies.
        _ => std::future::pending::<()>().await,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Registers (or replaces) a node in the running emulator.
pub async fn register(endpoint: &str, token: &str, entry: &Entry) -> Result<()> {
    let addr = http::endpoint_addr(endpoint)?;
    let auth = bearer(token);
    let body = serde_json::to_string(&entry.node)?;
    let r = http::request(
        addr,
        "PUT",
        &format!("/control/nodes/{}", entry.source),
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        &body,
        CONTROL_TIMEOUT,
    )
    .await?;
    if r.status != 204 {
        bail!(
            "IMDS emulator refused node {}: HTTP {} {}",
            entry.source,
            r.status,
            r.body.trim()
        );
    }
    Ok(())
}

/// Sets a node's `autoscaling/target-lifecycle-state` (`None`: the node
/// leaves its group, the path answers 404).
#[allow(dead_code)] // for the fault harness
pub async fn set_lifecycle(endpoint: &str, token: &str, instance_id: &str, state: Option<&str>) -> Result<()> {
    let addr = http::endpoint_addr(endpoint)?;
    let auth = bearer(token);
    let path = format!("/control/instances/{instance_id}/lifecycle-state");
    let (method, body) = match state {
        Some(state) => ("PUT", state),
        None => ("DELETE", ""),
    };
    let r = http::request(addr, method, &path, &[("Authorization", &auth)], body, CONTROL_TIMEOUT).await?;
    if r.status != 204 {
        bail!(
            "IMDS emulator: lifecycle state of {instance_id}: HTTP {} {}",
            r.status,
            r.body.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            source: Ipv4Addr::LOCALHOST,
            node: EmulatedNode {
                instance_id: "i-1".into(),
                mac: "02:00:00:00:00:01".into(),
                eni: "eni-1".into(),
                private_ip: Ipv4Addr::new(10, 77, 0, 10),
                az: "us-east-1a".into(),
                region: "us-east-1".into(),
                vpc_id: Some("vpc-1".into()),
                lifecycle_state: Some(IN_SERVICE.into()),
            },
        }
    }

    #[tokio::test]
    async fn the_control_api_registers_nodes_and_sets_lifecycle_states() {
        let emulator = Emulator::new("secret");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(emulator.clone().serve(listener, std::future::pending()));

        register(&endpoint, "secret", &entry()).await.unwrap();
        assert!(register(&endpoint, "wrong", &entry()).await.is_err());
        set_lifecycle(&endpoint, "secret", "i-1", Some(TERMINATED))
            .await
            .unwrap();
        assert!(set_lifecycle(&endpoint, "secret", "i-404", Some(TERMINATED))
            .await
            .is_err());

        let imds = vipfleet_agent::identity::Imds::with_endpoint(&endpoint).unwrap();
        assert_eq!(
            imds.target_lifecycle_state().await.unwrap(),
            vipfleet_agent::identity::LifecycleState::Terminated
        );
        set_lifecycle(&endpoint, "secret", "i-1", None).await.unwrap();
        assert_eq!(
            imds.target_lifecycle_state().await.unwrap(),
            vipfleet_agent::identity::LifecycleState::NotInAsg
        );
    }

    #[test]
    fn the_nodes_file_round_trips() {
        let path = std::env::temp_dir().join(format!("vipfleet-imds-nodes-{}.json", std::process::id()));
        write_nodes(&path, &[entry()]).unwrap();
        assert_eq!(read_nodes(&path).unwrap(), vec![entry()]);
        std::fs::remove_file(path).unwrap();
    }
}
