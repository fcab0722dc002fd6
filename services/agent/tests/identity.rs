//! The identity reader against the IMDSv2 emulator, over real HTTP with the
//! SDK's own IMDS client: token dance, per-source answers, overrides, the
//! lifecycle flip the lab uses for scale-in, and the 401 path; and where the
//! region comes from (config, then `AWS_REGION`, then IMDS).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use vipfleet_agent::config;
use vipfleet_agent::identity::emulator::{EmulatedNode, Emulator};
use vipfleet_agent::identity::{configured_region, resolve, IdentityError, IdentityOverrides, Imds, LifecycleState};

const CONTROL_TOKEN: &str = "test-control-token";

fn node(instance_id: &str, last: u8) -> EmulatedNode {
    EmulatedNode {
        instance_id: instance_id.into(),
        mac: format!("0e:00:00:00:00:{last:02x}"),
        eni: format!("eni-{last:04}"),
        private_ip: Ipv4Addr::new(10, 0, 1, last),
        az: "us-east-1b".into(),
        region: "us-east-1".into(),
        vpc_id: Some("vpc-0abc".into()),
        lifecycle_state: Some("InService".into()),
    }
}

/// A running emulator; dropping it stops the server.
struct Running {
    emu: Emulator,
    base: String,
    _stop: oneshot::Sender<()>,
}

async fn start(emu: Emulator) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(emu.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    Running { emu, base, _stop: stop }
}

/// A few lines of HTTP/1.0 so the test checks the wire behaviour without the
/// SDK's retries hiding status codes.
mod http10 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[derive(Clone, Copy)]
    pub enum Method {
        Get,
        Put,
    }

    pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let rest = url.strip_prefix("http://").unwrap();
        let (authority, path) = rest.split_at(rest.find('/').unwrap());
        let mut stream = TcpStream::connect(authority).await.unwrap();
        let method = match method {
            Method::Get => "GET",
            Method::Put => "PUT",
        };
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {authority}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

use http10::{send as raw_request, Method};

#[tokio::test]
async fn reads_identity_and_follows_lifecycle_flip() {
    let emu = Emulator::new(CONTROL_TOKEN);
    // Tests connect from 127.0.0.1, so that source is node 7; the fallback
    // must not be what answers.
    emu.add_node(IpAddr::V4(Ipv4Addr::LOCALHOST), node("i-0007", 7));
    emu.set_fallback(Some(node("i-fallback", 99)));
    let server = start(emu).await;

    let imds = Imds::with_endpoint(&server.base).unwrap();
    let id = imds.identity(&IdentityOverrides::default()).await.unwrap();
    assert_eq!(id.instance_id.as_str(), "i-0007");
    assert_eq!(id.eni.0, "eni-0007");
    assert_eq!(id.mac.as_deref(), Some("0e:00:00:00:00:07"));
    assert_eq!(id.private_ip, Ipv4Addr::new(10, 0, 1, 7));
    assert_eq!(id.az, "us-east-1b");
    assert_eq!(id.region, "us-east-1");
    assert_eq!(id.vpc_id.as_deref(), Some("vpc-0abc"));
    assert_eq!(id.lifecycle, Some(LifecycleState::InService));

    // The lab's scale-in: flip through the control API, as the lab does.
    let url = format!("{}/control/instances/i-0007/lifecycle-state", server.base);
    let auth = format!("Bearer {CONTROL_TOKEN}");
    let (status, _) = raw_request(Method::Put, &url, &[("Authorization", &auth)], "Terminated").await;
    assert_eq!(status, 204);
    assert_eq!(imds.target_lifecycle_state().await.unwrap(), LifecycleState::Terminated);

    // Through the library handle as well, and out of the ASG (404).
    assert!(server.emu.set_lifecycle_state("i-0007", Some("Warmed:Stopped")));
    assert_eq!(
        imds.target_lifecycle_state().await.unwrap(),
        LifecycleState::Other("Warmed:Stopped".into())
    );
    assert!(server.emu.set_lifecycle_state("i-0007", None));
    assert_eq!(imds.target_lifecycle_state().await.unwrap(), LifecycleState::NotInAsg);
    assert!(!server.emu.set_lifecycle_state("i-nope", Some("Terminated")));
}

#[tokio::test]
async fn fallback_answers_unknown_sources_and_overrides_win() {
    let emu = Emulator::new(CONTROL_TOKEN);
    emu.set_fallback(Some(node("i-fallback", 42)));
    let server = start(emu).await;
    let imds = Imds::with_endpoint(&server.base).unwrap();

    let overrides = IdentityOverrides {
        instance_id: Some("i-override".into()),
        az: Some("us-east-1c".into()),
        ..Default::default()
    };
    let id = resolve(&overrides, Some(&imds)).await.unwrap();
    assert_eq!(id.instance_id.as_str(), "i-override");
    assert_eq!(id.az, "us-east-1c");
    assert_eq!(id.eni.0, "eni-0042");
    assert_eq!(id.private_ip, Ipv4Addr::new(10, 0, 1, 42));
}

#[tokio::test]
async fn complete_overrides_never_call_imds() {
    let emu = Emulator::new(CONTROL_TOKEN);
    emu.set_fallback(Some(node("i-fallback", 1)));
    let server = start(emu).await;
    let imds = Imds::with_endpoint(&server.base).unwrap();
    let overrides = IdentityOverrides {
        instance_id: Some("i-lab-1".into()),
        eni: Some("eni-lab-1".into()),
        private_ip: Some(Ipv4Addr::new(10, 0, 9, 1)),
        az: Some("lab-a".into()),
        region: Some("us-east-1".into()),
    };
    let id = imds.identity(&overrides).await.unwrap();
    assert_eq!(id.instance_id.as_str(), "i-lab-1");
    assert_eq!(id.mac, None);
    assert_eq!(
        server.emu.metadata_requests(),
        0,
        "IMDS was consulted despite complete overrides"
    );
}

#[tokio::test]
async fn gets_without_a_valid_token_are_refused() {
    let emu = Emulator::new(CONTROL_TOKEN);
    emu.set_fallback(Some(node("i-1", 1)));
    let server = start(emu).await;
    let path = format!("{}/latest/meta-data/instance-id", server.base);

    let (status, _) = raw_request(Method::Get, &path, &[], "").await;
    assert_eq!(status, 401, "GET without a token");
    let (status, _) = raw_request(Method::Get, &path, &[("X-aws-ec2-metadata-token", "forged")], "").await;
    assert_eq!(status, 401, "GET with an unknown token");

    let token_url = format!("{}/latest/api/token", server.base);
    let (status, _) = raw_request(Method::Put, &token_url, &[], "").await;
    assert_eq!(status, 400, "token PUT without a TTL");
    let (status, token) = raw_request(
        Method::Put,
        &token_url,
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = raw_request(Method::Get, &path, &[("X-aws-ec2-metadata-token", &token)], "").await;
    assert_eq!((status, body.as_str()), (200, "i-1"));
}

#[tokio::test]
async fn unknown_source_without_fallback_is_a_typed_error() {
    let server = start(Emulator::new(CONTROL_TOKEN)).await;
    let imds = Imds::with_endpoint(&server.base).unwrap();
    let err = imds.identity(&IdentityOverrides::default()).await.unwrap_err();
    match &err {
        IdentityError::Request { path, .. } => assert_eq!(path, "/latest/meta-data/instance-id"),
        other => panic!("expected a request error naming the path, got {other}"),
    }
}

#[tokio::test]
async fn missing_value_names_its_path() {
    let emu = Emulator::new(CONTROL_TOKEN);
    emu.set_fallback(Some(EmulatedNode {
        vpc_id: None,
        lifecycle_state: None,
        ..node("i-1", 1)
    }));
    let server = start(emu).await;
    let imds = Imds::with_endpoint(&server.base).unwrap();
    // vpc-id and the lifecycle state are optional: absent is not an error.
    let id = imds.identity(&IdentityOverrides::default()).await.unwrap();
    assert_eq!((id.vpc_id, id.lifecycle), (None, Some(LifecycleState::NotInAsg)));
    let err = imds.get("/latest/meta-data/ami-id").await.unwrap_err();
    assert!(
        matches!(&err, IdentityError::NotFound { path } if path == "/latest/meta-data/ami-id"),
        "{err}"
    );
}

#[tokio::test]
async fn control_api_needs_the_bearer_token() {
    let emu = Emulator::new(CONTROL_TOKEN);
    let server = start(emu).await;
    let url = format!("{}/control/nodes/10.0.1.5", server.base);
    let body = serde_json::to_string(&node("i-0005", 5)).unwrap();
    let json = ("Content-Type", "application/json");

    let (status, _) = raw_request(Method::Put, &url, &[json], &body).await;
    assert_eq!(status, 401, "no token");
    let (status, _) = raw_request(Method::Put, &url, &[json, ("Authorization", "Bearer wrong")], &body).await;
    assert_eq!(status, 401, "wrong token");

    let auth = format!("Bearer {CONTROL_TOKEN}");
    let (status, _) = raw_request(Method::Put, &url, &[json, ("Authorization", &auth)], &body).await;
    assert_eq!(status, 204);
    let (status, listing) = raw_request(
        Method::Get,
        &format!("{}/control/nodes", server.base),
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(listing[0]["source"], "10.0.1.5");
    assert_eq!(listing[0]["instance_id"], "i-0005");

    let (status, _) = raw_request(
        Method::Put,
        &format!("{}/control/instances/i-none/lifecycle-state", server.base),
        &[("Authorization", &auth)],
        "Terminated",
    )
    .await;
    assert_eq!(status, 404, "unknown instance");
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn region_precedence_is_config_then_sdk_variables_then_imds() {
    let both = env(&[("AWS_REGION", "eu-west-1"), ("AWS_DEFAULT_REGION", "eu-central-1")]);
    /// `aws.region`, the environment, the region expected.
    type Case<'a> = (Option<&'a str>, &'a BTreeMap<String, String>, Option<&'a str>);
    let cases: &[Case] = &[
        (Some("ap-south-1"), &both, Some("ap-south-1")),
        (None, &both, Some("eu-west-1")),
        (
            None,
            &env(&[("AWS_DEFAULT_REGION", "eu-central-1")]),
            Some("eu-central-1"),
        ),
        // Blank means unset, at every level.
        (
            Some(" "),
            &env(&[("AWS_REGION", ""), ("AWS_DEFAULT_REGION", "eu-central-1")]),
            Some("eu-central-1"),
        ),
        (None, &env(&[("VIPFLEET_AWS_REGION", "not read here")]), None),
        (None, &BTreeMap::new(), None),
    ];
    for (config, env, expected) in cases {
        assert_eq!(
            configured_region(*config, env).as_deref(),
            *expected,
            "config {config:?}, env {env:?}"
        );
    }
}

const MINIMAL: &str = r#"
[aws]
table = "leases"
[fleet]
vips = ["10.200.0.1/32"]
route_tables = ["rtb-1"]
[health]
disabled = true
[peers]
enabled = false
"#;

#[test]
fn loaded_config_puts_the_region_in_the_identity_overrides() {
    let region = |text: &str, pairs: &[(&str, &str)], sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        config::load(text, &env(pairs), &sets).unwrap().identity.region
    };
    let from_env = [("AWS_REGION", "eu-west-1")];
    assert_eq!(region(MINIMAL, &from_env, &[]).as_deref(), Some("eu-west-1"));
    assert_eq!(region(MINIMAL, &[], &[]), None, "nothing named: IMDS decides");
    let in_file = MINIMAL.replace("[aws]\n", "[aws]\nregion = \"ap-south-1\"\n");
    assert_eq!(region(&in_file, &from_env, &[]).as_deref(), Some("ap-south-1"));
    let ours = [("AWS_REGION", "eu-west-1"), ("VIPFLEET_AWS_REGION", "us-west-2")];
    assert_eq!(region(MINIMAL, &ours, &[]).as_deref(), Some("us-west-2"));
    assert_eq!(
        region(MINIMAL, &ours, &["aws.region=sa-east-1"]).as_deref(),
        Some("sa-east-1")
    );
}

/// The README's local-endpoint recipe: `[node]` overrides plus `AWS_REGION`
/// is a complete identity, so IMDS is never asked; and with IMDS around,
/// `AWS_REGION` still wins over its `placement/region`.
#[tokio::test]
async fn aws_region_beats_imds_and_completes_node_overrides() {
    let emu = Emulator::new(CONTROL_TOKEN);
    emu.set_fallback(Some(node("i-imds", 3)));
    let server = start(emu).await;
    let imds = Imds::with_endpoint(&server.base).unwrap();
    let from_env = env(&[("AWS_REGION", "eu-west-1")]);

    let partial = config::load(MINIMAL, &from_env, &[]).unwrap();
    let id = resolve(&partial.identity, Some(&imds)).await.unwrap();
    assert_eq!(id.instance_id.as_str(), "i-imds", "the rest still comes from IMDS");
    assert_eq!(id.region, "eu-west-1", "IMDS says us-east-1; AWS_REGION must win");
    let asked = server.emu.metadata_requests();
    assert!(asked > 0);

    let node_section =
        "[node]\ninstance_id = \"i-local\"\neni = \"eni-local\"\nprivate_ip = \"10.0.9.1\"\naz = \"local-a\"\n";
    let local = config::load(&format!("{MINIMAL}{node_section}"), &from_env, &[]).unwrap();
    assert!(local.identity.is_complete());
    let id = resolve(&local.identity, Some(&imds)).await.unwrap();
    assert_eq!((id.instance_id.as_str(), id.region.as_str()), ("i-local", "eu-west-1"));
    assert_eq!(
        server.emu.metadata_requests(),
        asked,
        "IMDS was asked although [node] and AWS_REGION name everything"
    );
}
