//! The lab's AWS side in moto, made through the SDK as a real deployment
//! would be: a VPC (`10.o.0.0/16`), one subnet, one route table per router,
//! a launch template, an Auto Scaling group with the `vipfleet-drain`
//! termination hook, and one instance per node.
//!
//! Node instances are launched by the lab itself (`RunInstances` with an
//! explicit private IP, so the ENI's address is the node's address on the
//! bridge) and then attached to the group (`AttachInstances`), rather than
//! launched by the group: moto's group would pick its own addresses. The
//! group therefore lists exactly the lab's nodes, with a desired capacity
//! equal to their number.
//!
//! moto accepts any credentials; [`vipfleet_agent::aws::local_endpoint_config`]
//! makes sure the lab never reads real ones.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use aws_config::SdkConfig;
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{
    InstanceNetworkInterfaceSpecification, InstanceType, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
};
use aws_smithy_types::error::display::DisplayErrorContext;

use super::layout::{Layout, MAX_NODES};

pub const REGION: &str = "us-east-1";
pub const AZ: &str = "us-east-1a";
/// One of the images moto knows out of the box.
const IMAGE_ID: &str = "ami-12c6146b";
const INSTANCE_TYPE: &str = "t3.micro";
pub const LIFECYCLE_HOOK: &str = "vipfleet-drain";
/// The hook's timeout: long enough for a drain at the default lease settings.
const LIFECYCLE_HOOK_HEARTBEAT: Duration = Duration::from_secs(300);

/// The fleet's fixtures in moto.
#[derive(Clone, Debug)]
pub struct Fabric {
    pub vpc_id: String,
    pub subnet_id: String,
    pub route_tables: Vec<String>,
    pub launch_template: String,
    pub asg_name: String,
}

/// One node's instance.
#[derive(Clone, Debug)]
pub struct Instance {
    pub instance_id: String,
    pub eni: String,
    pub mac: String,
    pub ip: Ipv4Addr,
}

/// The SDK's error with its whole chain: "service error" alone says nothing.
pub fn display_error<E: std::error::Error>(e: &E) -> String {
    DisplayErrorContext(e).to_string()
}

fn name_tag(resource: ResourceType, name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .tags(Tag::builder().key("Name").value(name).build())
        .build()
}

/// Creates the VPC, the subnet, `route_tables` route tables, the launch
/// template and the Auto Scaling group.
pub async fn build_fabric(sdk: &SdkConfig, layout: &Layout, route_tables: usize) -> Result<Fabric> {
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let p = &layout.prefix;
    let vpc = ec2
        .create_vpc()
        .cidr_block(layout.vpc_cidr())
        .tag_specifications(name_tag(ResourceType::Vpc, &format!("{p}-vpc")))
        .send()
        .await
        .map_err(|e| anyhow!("CreateVpc {}: {}", layout.vpc_cidr(), display_error(&e)))?;
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .ok_or_else(|| anyhow!("CreateVpc answered without a VPC id"))?
        .to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block(layout.subnet_cidr())
        .availability_zone(AZ)
        .tag_specifications(name_tag(ResourceType::Subnet, &format!("{p}-subnet")))
        .send()
        .await
        .map_err(|e| anyhow!("CreateSubnet {}: {}", layout.subnet_cidr(), display_error(&e)))?;
    let subnet_id = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .ok_or_else(|| anyhow!("CreateSubnet answered without a subnet id"))?
        .to_string();
    let mut tables = Vec::new();
    for j in 0..route_tables {
        let out = ec2
            .create_route_table()
            .vpc_id(&vpc_id)
            .tag_specifications(name_tag(ResourceType::RouteTable, &format!("{p}-rt{j}")))
            .send()
            .await
            .map_err(|e| anyhow!("CreateRouteTable {j}: {}", display_error(&e)))?;
        let id = out
            .route_table()
            .and_then(|t| t.route_table_id())
            .ok_or_else(|| anyhow!("CreateRouteTable answered without an id"))?;
        tables.push(id.to_string());
    }

    let launch_template = layout.launch_template_name();
    ec2.create_launch_template()
        .launch_template_name(&launch_template)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(IMAGE_ID)
                .instance_type(InstanceType::from(INSTANCE_TYPE))
                .build(),
        )
        .send()
        .await
        .map_err(|e| anyhow!("CreateLaunchTemplate {launch_template}: {}", display_error(&e)))?;
    let asg = aws_sdk_autoscaling::Client::new(sdk);
    let asg_name = layout.asg_name();
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(&asg_name)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_name(&launch_template)
                .build(),
        )
        .min_size(0)
        .max_size(i32::try_from(MAX_NODES).unwrap_or(i32::MAX))
        .desired_capacity(0)
        .vpc_zone_identifier(&subnet_id)
        .send()
        .await
        .map_err(|e| anyhow!("CreateAutoScalingGroup {asg_name}: {}", display_error(&e)))?;
    // Realism only: moto accepts the hook but never holds an instance in
    // Terminating:Wait; the lab simulates scale-in through IMDS instead.
    if let Err(e) = asg
        .put_lifecycle_hook()
        .auto_scaling_group_name(&asg_name)
        .lifecycle_hook_name(LIFECYCLE_HOOK)
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .heartbeat_timeout(i32::try_from(LIFECYCLE_HOOK_HEARTBEAT.as_secs()).unwrap_or(i32::MAX))
        .default_result("CONTINUE")
        .send()
        .await
    {
        tracing::warn!("PutLifecycleHook on {asg_name}: {}", display_error(&e));
    }
    Ok(Fabric {
        vpc_id,
        subnet_id,
        route_tables: tables,
        launch_template,
        asg_name,
    })
}

/// Launches node `index`'s instance with its planned private IP and
/// attaches it to the group.
pub async fn launch_node(sdk: &SdkConfig, fabric: &Fabric, layout: &Layout, index: usize) -> Result<Instance> {
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let ip = layout.node_ip(index);
    let out = ec2
        .run_instances()
        .image_id(IMAGE_ID)
        .instance_type(InstanceType::from(INSTANCE_TYPE))
        .min_count(1)
        .max_count(1)
        .network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(&fabric.subnet_id)
                .private_ip_address(ip.to_string())
                .build(),
        )
        .tag_specifications(name_tag(ResourceType::Instance, &format!("{}-n{index}", layout.prefix)))
        .send()
        .await
        .map_err(|e| anyhow!("RunInstances for node {index} ({ip}): {}", display_error(&e)))?;
    let instance = out
        .instances()
        .first()
        .ok_or_else(|| anyhow!("RunInstances for node {index} answered no instance"))?;
    let instance_id = instance
        .instance_id()
        .ok_or_else(|| anyhow!("RunInstances for node {index}: no instance id"))?
        .to_string();
    let nic = instance
        .network_interfaces()
        .iter()
        .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
        .or_else(|| instance.network_interfaces().first())
        .ok_or_else(|| anyhow!("instance {instance_id} has no network interface"))?;
    let eni = nic
        .network_interface_id()
        .ok_or_else(|| anyhow!("instance {instance_id}: interface without an id"))?
        .to_string();
    let mac = nic
        .mac_address()
        .ok_or_else(|| anyhow!("instance {instance_id}: interface {eni} without a MAC"))?
        .to_string();
    let got_ip: Ipv4Addr = nic
        .private_ip_address()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow!("instance {instance_id}: interface {eni} without a private IP"))?;
    if got_ip != ip {
        return Err(anyhow!(
            "moto gave node {index}'s ENI {eni} the address {got_ip}, not the {ip} asked for"
        ));
    }
    aws_sdk_autoscaling::Client::new(sdk)
        .attach_instances()
        .auto_scaling_group_name(&fabric.asg_name)
        .instance_ids(&instance_id)
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "AttachInstances {instance_id} to {}: {}",
                fabric.asg_name,
                display_error(&e)
            )
        })
        .context("attaching the node to the Auto Scaling group")?;
    Ok(Instance {
        instance_id,
        eni,
        mac,
        ip,
    })
}
