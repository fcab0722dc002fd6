//! Who this node is: instance id, primary ENI, private IP, AZ and region, read
//! from the EC2 instance metadata service (IMDSv2), plus the Auto Scaling
//! target lifecycle state that tells the agent to drain on scale-in.
//!
//! The agent needs its ENI because VIP routes target the ENI, never the
//! instance. IMDS is reached with the SDK's own client
//! (`aws_config::imds::Client`), so the SDK-standard
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` points it at the lab's emulator
//! ([`emulator`]). Every value can be overridden from the config; when all of
//! them are, IMDS is not contacted at all (lab nodes without an emulator).
//!
//! The region is the one value the SDK's own variables also name: it is
//! `aws.region` from the config, else `AWS_REGION` / `AWS_DEFAULT_REGION`
//! (as the SDK's region chain reads them), else IMDS ([`configured_region`]).

pub mod emulator;

use std::net::Ipv4Addr;
use std::time::Duration;

use aws_config::imds::client::error::ImdsError;
use aws_smithy_types::error::display::DisplayErrorContext;
use thiserror::Error;
use tracing::debug;
use vipfleet_core::types::{EniId, NodeId};

/// How long one IMDS attempt may take. IMDS answers in microseconds on a real
/// instance; a slow answer means something is wrong, and the lifecycle poll
/// must not stall the agent behind it.
const IMDS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per IMDS read (the SDK retries 5xx and expired-token 401s).
const IMDS_MAX_ATTEMPTS: u32 = 3;
/// How long a connection to IMDS may take to open: the SDK's 1 s default
/// ran out in the lab on a loaded machine (a node namespace's first packets
/// wait for ARP), and the agent then exits before it ever started.
const IMDS_CONNECT_TIMEOUT: Duration = IMDS_ATTEMPT_TIMEOUT;

const PATH_INSTANCE_ID: &str = "/latest/meta-data/instance-id";
const PATH_MAC: &str = "/latest/meta-data/mac";
const PATH_LOCAL_IPV4: &str = "/latest/meta-data/local-ipv4";
const PATH_AZ: &str = "/latest/meta-data/placement/availability-zone";
const PATH_REGION: &str = "/latest/meta-data/placement/region";
const PATH_LIFECYCLE: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";

fn interface_path(mac: &str, leaf: &str) -> String {
    format!("/latest/meta-data/network/interfaces/macs/{mac}/{leaf}")
}

pub use vipfleet_agent_config::identity::{configured_region, IdentityOverrides, REGION_VARS};

/// The Auto Scaling group's intent for this instance
/// (`autoscaling/target-lifecycle-state`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LifecycleState {
    InService,
    /// Scale-in or instance refresh: drain, then complete the lifecycle action.
    Terminated,
    /// Any other value (warm pool states, `Detached`, …): reported verbatim.
    Other(String),
    /// IMDS answered 404: the instance is not in an Auto Scaling group.
    NotInAsg,
}

impl LifecycleState {
    fn parse(value: &str) -> Self {
        match value.trim() {
            "InService" => Self::InService,
            "Terminated" => Self::Terminated,
            other => Self::Other(other.to_string()),
        }
    }
}

/// This node, as the lease protocol and the route writer see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node id in the lease table (`node#<instance-id>`).
    pub instance_id: NodeId,
    /// Target of this node's VIP routes: the ENI of the primary interface.
    pub eni: EniId,
    /// MAC of the primary interface; `None` when the ENI came from config.
    pub mac: Option<String>,
    /// Address haproxy serves on and peers probe.
    pub private_ip: Ipv4Addr,
    pub az: String,
    pub region: String,
    /// Lets config validation check that VIPs lie outside the VPC's CIDR;
    /// `None` when IMDS was not read or the interface has no VPC.
    pub vpc_id: Option<String>,
    /// The lifecycle state at start-up; `None` when IMDS was not read.
    pub lifecycle: Option<LifecycleState>,
}

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("IMDS endpoint {endpoint:?} is not a valid URI: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error("IMDS GET {path} failed: {detail}")]
    Request { path: String, detail: String },
    #[error("IMDS has no {path} (HTTP 404); set it in the [node] config section")]
    NotFound { path: String },
    #[error("IMDS {path} returned {value:?}, which is not {expected}")]
    Invalid {
        path: String,
        value: String,
        expected: &'static str,
    },
}

/// The IMDSv2 client, narrowed to the reads the agent makes.
#[derive(Clone, Debug)]
pub struct Imds {
    client: aws_config::imds::Client,
}

impl Imds {
    /// The endpoint from `AWS_EC2_METADATA_SERVICE_ENDPOINT`, the profile, or
    /// the instance default `169.254.169.254`.
    pub fn from_env() -> Self {
        Self::from_builder(aws_config::imds::Client::builder())
    }

    /// An explicit endpoint such as `http://127.0.0.1:1338` (tests, the lab).
    pub fn with_endpoint(endpoint: &str) -> Result<Self, IdentityError> {
        let builder =
            aws_config::imds::Client::builder()
                .endpoint(endpoint)
                .map_err(|e| IdentityError::BadEndpoint {
                    endpoint: endpoint.to_string(),
                    reason: e.to_string(),
                })?;
        Ok(Self::from_builder(builder))
    }

    fn from_builder(builder: aws_config::imds::client::Builder) -> Self {
        let client = builder
            .max_attempts(IMDS_MAX_ATTEMPTS)
            .connect_timeout(IMDS_CONNECT_TIMEOUT)
            .operation_attempt_timeout(IMDS_ATTEMPT_TIMEOUT)
            .build();
        Self { client }
    }

    /// One metadata value; `Ok(None)` when IMDS answers 404.
    pub async fn get_optional(&self, path: &str) -> Result<Option<String>, IdentityError> {
        match self.client.get(path).await {
            Ok(value) => Ok(Some(value.as_ref().trim().to_string())),
            Err(ImdsError::ErrorResponse(response)) if response.response().status().as_u16() == 404 => Ok(None),
            Err(e) => Err(IdentityError::Request {
                path: path.to_string(),
                detail: DisplayErrorContext(&e).to_string(),
            }),
        }
    }

    /// One metadata value that must exist.
    pub async fn get(&self, path: &str) -> Result<String, IdentityError> {
        self.get_optional(path)
            .await?
            .ok_or_else(|| IdentityError::NotFound { path: path.to_string() })
    }

    /// Reads `autoscaling/target-lifecycle-state`. The agent polls this to
    /// learn about scale-in before the instance is terminated.
    pub async fn target_lifecycle_state(&self) -> Result<LifecycleState, IdentityError> {
        Ok(match self.get_optional(PATH_LIFECYCLE).await? {
            Some(value) => LifecycleState::parse(&value),
            None => LifecycleState::NotInAsg,
        })
    }

    /// The node's identity: overrides first, IMDS for the rest.
    pub async fn identity(&self, overrides: &IdentityOverrides) -> Result<NodeIdentity, IdentityError> {
        resolve(overrides, Some(self)).await
    }
}

/// Builds the identity from `overrides` alone when they are complete, else
/// fills the gaps from `imds`. With `imds = None` the overrides must be
/// complete; a missing value is reported as IMDS having nothing for it.
pub async fn resolve(overrides: &IdentityOverrides, imds: Option<&Imds>) -> Result<NodeIdentity, IdentityError> {
    let imds = match imds {
        Some(imds) if !overrides.is_complete() => imds,
        _ => return from_overrides_only(overrides),
    };
    debug!(?overrides, "reading node identity from IMDS");

    let instance_id = match &overrides.instance_id {
        Some(id) => id.clone(),
        None => imds.get(PATH_INSTANCE_ID).await?,
    };
    // The MAC leads to the ENI and the VPC; it is only worth a call when one
    // of those is still unknown, which is always the case for the VPC here.
    let mac = imds.get(PATH_MAC).await?;
    let eni = match &overrides.eni {
        Some(eni) => eni.clone(),
        None => imds.get(&interface_path(&mac, "interface-id")).await?,
    };
    let private_ip = match overrides.private_ip {
        Some(ip) => ip,
        None => parse_ipv4(PATH_LOCAL_IPV4, imds.get(PATH_LOCAL_IPV4).await?)?,
    };
    let az = match &overrides.az {
        Some(az) => az.clone(),
        None => imds.get(PATH_AZ).await?,
    };
    let region = match &overrides.region {
        Some(region) => region.clone(),
        None => imds.get(PATH_REGION).await?,
    };
    let vpc_id = imds.get_optional(&interface_path(&mac, "vpc-id")).await?;
    let lifecycle = Some(imds.target_lifecycle_state().await?);

    Ok(NodeIdentity {
        instance_id: NodeId::new(instance_id),
        eni: EniId(eni),
        mac: Some(mac),
        private_ip,
        az,
        region,
        vpc_id,
        lifecycle,
    })
}

fn from_overrides_only(overrides: &IdentityOverrides) -> Result<NodeIdentity, IdentityError> {
    fn need<T: Clone>(value: &Option<T>, path: &str) -> Result<T, IdentityError> {
        value
            .clone()
            .ok_or_else(|| IdentityError::NotFound { path: path.to_string() })
    }
    Ok(NodeIdentity {
        instance_id: NodeId::new(need(&overrides.instance_id, PATH_INSTANCE_ID)?),
        eni: EniId(need(&overrides.eni, &interface_path("<mac>", "interface-id"))?),
        mac: None,
        private_ip: need(&overrides.private_ip, PATH_LOCAL_IPV4)?,
        az: need(&overrides.az, PATH_AZ)?,
        region: need(&overrides.region, PATH_REGION)?,
        vpc_id: None,
        lifecycle: None,
    })
}

fn parse_ipv4(path: &str, value: String) -> Result<Ipv4Addr, IdentityError> {
    value.parse().map_err(|_| IdentityError::Invalid {
        path: path.to_string(),
        value,
        expected: "an IPv4 address",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> IdentityOverrides {
        IdentityOverrides {
            instance_id: Some("i-1".into()),
            eni: Some("eni-1".into()),
            private_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
            az: Some("us-east-1a".into()),
            region: Some("us-east-1".into()),
        }
    }

    #[test]
    fn lifecycle_values_parse() {
        assert_eq!(LifecycleState::parse("InService\n"), LifecycleState::InService);
        assert_eq!(LifecycleState::parse("Terminated"), LifecycleState::Terminated);
        assert_eq!(
            LifecycleState::parse("Warmed:Stopped"),
            LifecycleState::Other("Warmed:Stopped".into())
        );
    }

    #[tokio::test]
    async fn complete_overrides_need_no_imds() {
        let id = resolve(&complete(), None).await.unwrap();
        assert_eq!(id.instance_id.as_str(), "i-1");
        assert_eq!(id.eni.0, "eni-1");
        assert_eq!(id.lifecycle, None);
    }

    #[tokio::test]
    async fn incomplete_overrides_without_imds_name_the_missing_value() {
        let overrides = IdentityOverrides { az: None, ..complete() };
        let err = resolve(&overrides, None).await.unwrap_err();
        assert!(
            matches!(&err, IdentityError::NotFound { path } if path == PATH_AZ),
            "{err}"
        );
    }

    #[test]
    fn bad_endpoint_is_a_typed_error() {
        let err = Imds::with_endpoint("not a uri").unwrap_err();
        assert!(matches!(err, IdentityError::BadEndpoint { .. }), "{err}");
    }
}
