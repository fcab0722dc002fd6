//! `init_table`: creates the lease table (`vipfleet-agent init-table`), waits
//! for it to turn ACTIVE and enables TTL on `expires_at`. Idempotent: an
//! existing table is checked (key schema) and only its TTL is fixed up, so
//! the command can run on every deploy.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ProvisionedThroughput, ScalarAttributeType,
    TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_dynamodb::Client;
use thiserror::Error;

use super::dynamo_items::attr;
use super::error_detail;

/// Small on purpose: the steady state is one write per node per heartbeat
/// and a few scans per second (docs/design.md, "Cost").
pub const DEFAULT_PROVISIONED_RCU: i64 = 5;
pub const DEFAULT_PROVISIONED_WCU: i64 = 5;
/// A new table takes seconds to a minute to turn ACTIVE.
const TABLE_ACTIVE_POLL_INTERVAL: Duration = Duration::from_secs(1);
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(180);

/// How the table is billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Billing {
    OnDemand,
    Provisioned { read_units: i64, write_units: i64 },
}

impl FromStr for Billing {
    type Err = String;
    /// `on-demand`, or `provisioned` with the default small capacity.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on-demand" => Ok(Billing::OnDemand),
            "provisioned" => Ok(Billing::Provisioned {
                read_units: DEFAULT_PROVISIONED_RCU,
                write_units: DEFAULT_PROVISIONED_WCU,
            }),
            other => Err(format!("billing mode {other:?} is neither on-demand nor provisioned")),
        }
    }
}

/// What `init_table` did, for the command's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableInit {
    /// The table did not exist and was created.
    pub created: bool,
    /// TTL was off and has been turned on.
    pub ttl_enabled: bool,
}

impl fmt::Display for TableInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = if self.created { "created" } else { "already existed" };
        let ttl = if self.ttl_enabled { "enabled now" } else { "already on" };
        write!(f, "table {table}; TTL on {} {ttl}", attr::EXPIRES_AT)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("init-table {table}: {step}: {detail}")]
pub struct InitTableError {
    pub table: String,
    pub step: &'static str,
    pub detail: String,
}

/// Creates the lease table `name` if need be and makes sure TTL is on.
pub async fn init_table(client: &Client, name: &str, billing: Billing) -> Result<TableInit, InitTableError> {
    let fail = |step: &'static str, detail: String| InitTableError {
        table: name.to_string(),
        step,
        detail,
    };
    let key = KeySchemaElement::builder()
        .attribute_name(attr::PK)
        .key_type(KeyType::Hash)
        .build()
        .map_err(|e| fail("create table", e.to_string()))?;
    let key_type = AttributeDefinition::builder()
        .attribute_name(attr::PK)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| fail("create table", e.to_string()))?;
    let mut create = client
        .create_table()
        .table_name(name)
        .key_schema(key)
        .attribute_definitions(key_type);
    create = match billing {
        Billing::OnDemand => create.billing_mode(BillingMode::PayPerRequest),
        Billing::Provisioned {
            read_units,
            write_units,
        } => create.billing_mode(BillingMode::Provisioned).provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(read_units)
                .write_capacity_units(write_units)
                .build()
                .map_err(|e| fail("create table", e.to_string()))?,
        ),
    };
    let created = match create.send().await {
        Ok(_) => true,
        Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => false,
        Err(err) => return Err(fail("create table", error_detail("CreateTable", &err))),
    };
    wait_until_active(client, name)
        .await
        .map_err(|d| fail("wait for ACTIVE", d))?;
    let ttl_enabled = ensure_ttl(client, name).await.map_err(|d| fail("enable TTL", d))?;
    Ok(TableInit { created, ttl_enabled })
}

/// Polls until ACTIVE, and checks that an existing table has our key.
async fn wait_until_active(client: &Client, name: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_TIMEOUT;
    loop {
        let out = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| error_detail("DescribeTable", &e))?;
        let table = out.table().ok_or("DescribeTable returned no table")?;
        let keys: Vec<_> = table
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name(), k.key_type().as_str()))
            .collect();
        if keys != [(attr::PK, KeyType::Hash.as_str())] {
            return Err(format!(
                "the table exists with key schema {keys:?}; vipfleet needs a string partition key {:?} only",
                attr::PK
            ));
        }
        match table.table_status() {
            Some(TableStatus::Active) => return Ok(()),
            status if tokio::time::Instant::now() >= deadline => {
                return Err(format!("still {status:?} after {TABLE_ACTIVE_TIMEOUT:?}"))
            }
            _ => tokio::time::sleep(TABLE_ACTIVE_POLL_INTERVAL).await,
        }
    }
}

/// Turns TTL on for `expires_at`; `Ok(false)` when it already was.
async fn ensure_ttl(client: &Client, name: &str) -> Result<bool, String> {
    let out = client
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(|e| error_detail("DescribeTimeToLive", &e))?;
    let current = out.time_to_live_description();
    let status = current.and_then(|d| d.time_to_live_status());
    let attribute = current.and_then(|d| d.attribute_name());
    match status {
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) if attribute == Some(attr::EXPIRES_AT) => {
            return Ok(false)
        }
        // DynamoDB allows one TTL attribute, and refuses to change it for an
        // hour after a change: say so rather than fail obscurely.
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) => {
            return Err(format!(
                "TTL is on for attribute {attribute:?}; vipfleet needs it on {:?}",
                attr::EXPIRES_AT
            ))
        }
        Some(TimeToLiveStatus::Disabling) => {
            return Err("TTL is being disabled; DynamoDB refuses to re-enable it until that is done".into())
        }
        _ => {}
    }
    let spec = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(attr::EXPIRES_AT)
        .build()
        .map_err(|e| e.to_string())?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(|e| error_detail("UpdateTimeToLive", &e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_parses_the_cli_words() {
        assert_eq!("on-demand".parse(), Ok(Billing::OnDemand));
        assert_eq!(
            "provisioned".parse(),
            Ok(Billing::Provisioned {
                read_units: DEFAULT_PROVISIONED_RCU,
                write_units: DEFAULT_PROVISIONED_WCU
            })
        );
        assert!("PAY_PER_REQUEST"
            .parse::<Billing>()
            .unwrap_err()
            .contains("PAY_PER_REQUEST"));
    }
}
