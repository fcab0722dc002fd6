//! # AWS adapters: the core's `LeaseStore` and `RouteTable` over the real SDK
//!
//! Data flows from the driver into these adapters and back as the core's
//! types; nothing above this module sees an SDK type.
//!
//! - [`dynamo`] — [`dynamo::DynamoLeaseStore`] (the lease table of
//!   docs/design.md) and [`dynamo::init_table`] (`vipfleet-agent init-table`);
//!   the item format is in `dynamo_items`, the takeover transaction in
//!   `dynamo_takeover`, table creation in `dynamo_table`, the request units
//!   it consumed in `dynamo_units`.
//! - [`ec2`] — [`ec2::Ec2RouteTable`] (VIP routes, one change per call, each
//!   attempt gated) and the start-up calls (source/destination check, VPC
//!   CIDRs, route tables exist). Pacing and retries of route changes are
//!   the lease machine's.
//! - this module — [`sdk_config`] and [`local_endpoint_config`] (or
//!   [`local_endpoints_config`], DynamoDB apart), the one
//!   place SDK clients get their retry and timeout policy; the error
//!   classification both adapters share.
//! - `dynamo_mock_tests`, `ec2_mock_tests` — the error mapping against
//!   `aws-smithy-mocks`. The contract suites run in `tests/contract.rs`.
//!
//! Conditional-write failures are outcomes (the core's enums), never errors.
//! Errors keep the SDK's whole error chain (`DisplayErrorContext`), because
//! "service error" alone tells an operator nothing.

pub mod dynamo;
mod dynamo_items;
mod dynamo_table;
mod dynamo_takeover;
mod dynamo_units;
pub mod ec2;

#[cfg(test)]
mod dynamo_mock_tests;
#[cfg(test)]
mod ec2_mock_tests;

use std::error::Error as StdError;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

/// A TCP/TLS connect to a regional endpoint takes milliseconds; longer means
/// the endpoint is unreachable, and the heartbeat must learn that within one
/// lease rather than after the OS gives up.
const SDK_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One attempt of one call. Well above DynamoDB's and EC2's normal latency;
/// a hung connection must not hold the driver for longer than a lease.
const SDK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// All attempts of one call, retries included.
const SDK_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Region used with a local endpoint (moto accepts any).
const LOCAL_REGION: &str = "us-east-1";

fn policy() -> (RetryConfig, TimeoutConfig) {
    // Adaptive mode adds a client-side rate limiter that backs off on
    // throttling answers, so a burst of route writes never becomes a storm.
    let retry = RetryConfig::adaptive();
    let timeout = TimeoutConfig::builder()
        .connect_timeout(SDK_CONNECT_TIMEOUT)
        .operation_attempt_timeout(SDK_ATTEMPT_TIMEOUT)
        .operation_timeout(SDK_OPERATION_TIMEOUT)
        .build();
    (retry, timeout)
}

/// Attempts of one lease store call, and the first retry's backoff: a few
/// quick tries (DynamoDB's own SDKs start at 25 to 50 ms), then the lease
/// machine's backoff takes over.
const DYNAMODB_MAX_ATTEMPTS: u32 = 3;
const DYNAMODB_INITIAL_BACKOFF: Duration = Duration::from_millis(50);

/// The lease store's client: standard retries, not the adaptive mode the
/// other clients use. Adaptive mode's rate limiter is the client's, not a
/// call's: throttled Scans slowed the heartbeats behind them, and in the
/// lab's `store-throttle` a survivor's counter stood still until a peer
/// expired it (and a read of the shards spent 7.5 s in the SDK's retries
/// before it timed out). DynamoDB throttles reads and writes apart, and the
/// lease machine backs off throttled reads itself.
pub fn dynamodb_client(sdk: &SdkConfig) -> aws_sdk_dynamodb::Client {
    let retry = RetryConfig::standard()
        .with_max_attempts(DYNAMODB_MAX_ATTEMPTS)
        .with_initial_backoff(DYNAMODB_INITIAL_BACKOFF);
    let config = aws_sdk_dynamodb::config::Builder::from(sdk).retry_config(retry).build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// The SDK configuration every client of the agent is built from: the
/// default credential/region chain (IMDS on EC2), `AWS_ENDPOINT_URL` when
/// set (moto in the lab), adaptive retries and bounded timeouts. `region`
/// overrides the chain's region.
pub async fn sdk_config(region: Option<String>) -> SdkConfig {
    let (retry, timeout) = policy();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeout);
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    loader.load().await
}

/// The configuration for a local AWS endpoint (moto): the given URL, fixed
/// dummy credentials and region, the same retry and timeout policy as
/// [`sdk_config`]. For tests and the lab; it never reads the environment's
/// credentials, so a test cannot reach a real account by accident.
pub async fn local_endpoint_config(endpoint_url: &str) -> SdkConfig {
    local_endpoints_config(endpoint_url, endpoint_url).await
}

/// As [`local_endpoint_config`], with DynamoDB at an endpoint of its own:
/// the lab runs one moto per service, as AWS runs its services apart.
pub async fn local_endpoints_config(endpoint_url: &str, dynamodb_url: &str) -> SdkConfig {
    let (retry, timeout) = policy();
    let credentials = Credentials::new("testing", "testing", None, None, "vipfleet-local-endpoint");
    let endpoints = LocalEndpoints {
        default: endpoint_url.to_string(),
        dynamodb: dynamodb_url.to_string(),
    };
    // No endpoint set in code: a client takes its service's from the
    // service config, as it would take `AWS_ENDPOINT_URL_DYNAMODB`.
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(LOCAL_REGION))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .retry_config(retry)
        .timeout_config(timeout)
        .load()
        .await
        .into_builder()
        .service_config(endpoints)
        .build()
}

/// The service config of [`local_endpoints_config`]: it answers endpoint
/// URLs only, so no other setting can come from the environment.
#[derive(Debug)]
struct LocalEndpoints {
    default: String,
    dynamodb: String,
}

/// The SDK's service id for DynamoDB (`ServiceConfigKey::service_id`).
const DYNAMODB_SERVICE_ID: &str = "DynamoDB";

impl LoadServiceConfig for LocalEndpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        (key.profile() == "endpoint_url").then(|| {
            if key.service_id() == DYNAMODB_SERVICE_ID {
                self.dynamodb.clone()
            } else {
                self.default.clone()
            }
        })
    }
}

/// Error codes by which DynamoDB and EC2 ask a caller to slow down.
const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "Throttling",
    "RequestThrottled",
    "TooManyRequestsException",
];

/// How an SDK failure that is not a modeled outcome should be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The service asked us to slow down.
    Throttled,
    /// No usable answer: timeout, connection failure, 5xx, truncated reply.
    Unavailable,
    /// The service answered with an error about the request itself.
    Other,
}

pub(crate) fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> ErrorClass {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => ErrorClass::Unavailable,
        // A reply that could not be parsed is almost always one cut short.
        SdkError::ResponseError(_) => ErrorClass::Unavailable,
        SdkError::ServiceError(service) => {
            if error_code(err).is_some_and(|code| THROTTLING_CODES.contains(&code)) {
                ErrorClass::Throttled
            } else if service.raw().status().is_server_error() {
                ErrorClass::Unavailable
            } else {
                ErrorClass::Other
            }
        }
        _ => ErrorClass::Other,
    }
}

/// The service's error code (`ConditionalCheckFailedException`,
/// `InvalidRouteTableID.NotFound`, …), when it answered.
pub(crate) fn error_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

/// `context: <the whole SDK error chain>` for error details and logs.
pub(crate) fn error_detail<E: StdError + 'static>(context: &str, err: &SdkError<E, HttpResponse>) -> String {
    format!("{context}: {}", DisplayErrorContext(err))
}

/// Clients over `aws-smithy-mocks` rules, without the SDK crates'
/// `test-util` feature (enabling it would rebuild the EC2 crate, minutes on
/// two cores). Retries are off so that each rule answers exactly one call.
#[cfg(test)]
macro_rules! mocked_client {
    ($sdk:ident, [$($rule:expr),+ $(,)?]) => {{
        let interceptor = aws_smithy_mocks::MockResponseInterceptor::new()
            .rule_mode(aws_smithy_mocks::RuleMode::MatchAny)
            $(.with_rule($rule))+;
        let config = $sdk::config::Config::builder()
            .behavior_version($sdk::config::BehaviorVersion::latest())
            .region($sdk::config::Region::new("us-east-1"))
            .credentials_provider($sdk::config::Credentials::new("testing", "testing", None, None, "mock"))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .http_client(aws_smithy_mocks::create_mock_http_client())
            .interceptor(interceptor)
            .build();
        $sdk::Client::from_conf(config)
    }};
}
#[cfg(test)]
pub(crate) use mocked_client;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Who is asked: the first request line a listener receives, if any.
    async fn first_request(listener: &TcpListener) -> Option<String> {
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .ok()?
            .ok()?;
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[tokio::test]
    async fn the_lease_store_retries_in_standard_mode_and_the_rest_adaptively() {
        let sdk = super::local_endpoint_config("http://127.0.0.1:9").await;
        let ddb = super::dynamodb_client(&sdk);
        let retry = ddb.config().retry_config().expect("a retry policy");
        assert_eq!(retry.mode(), aws_config::retry::RetryMode::Standard);
        assert_eq!(retry.max_attempts(), super::DYNAMODB_MAX_ATTEMPTS);
        assert_eq!(retry.initial_backoff(), super::DYNAMODB_INITIAL_BACKOFF);
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let retry = ec2.config().retry_config().expect("a retry policy");
        assert_eq!(retry.mode(), aws_config::retry::RetryMode::Adaptive);
    }

    #[tokio::test]
    async fn dynamodb_goes_to_its_own_endpoint_and_every_other_service_to_the_default() {
        let default = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dynamodb = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = |l: &TcpListener| format!("http://{}", l.local_addr().unwrap());
        let sdk = super::local_endpoints_config(&url(&default), &url(&dynamodb)).await;

        // The calls fail (nobody answers); only where they went matters.
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let ddb_call = tokio::spawn(async move { ddb.list_tables().send().await.is_err() });
        let seen = first_request(&dynamodb)
            .await
            .expect("the DynamoDB call reaches its endpoint");
        assert!(seen.to_ascii_lowercase().contains("x-amz-target: dynamodb_"), "{seen}");
        ddb_call.abort();

        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let ec2_call = tokio::spawn(async move { ec2.describe_route_tables().send().await.is_err() });
        let seen = first_request(&default)
            .await
            .expect("the EC2 call reaches the default endpoint");
        assert!(seen.contains("Action=DescribeRouteTables"), "{seen}");
        ec2_call.abort();
    }
}
