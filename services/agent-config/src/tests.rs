use super::*;

const GOOD: &str = r#"
    [aws]
    table = "leases"
    [fleet]
    vips = ["10.200.0.1/32", "10.200.0.2"]
    route_tables = ["rtb-1", "rtb-2"]
    [health]
    url = "http://127.0.0.1:8404/healthz"
    [peers]
    key_file = "/etc/vipfleet/peer.key"
"#;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn a_minimal_file_gets_the_defaults() {
    let c = load(GOOD, &BTreeMap::new(), &[]).unwrap();
    assert_eq!(c.table, "leases");
    assert_eq!(c.layout.len(), 2);
    assert_eq!(c.lease, LeaseConfig::CHEAP);
    assert_eq!(c.vip_interface.as_deref(), Some(DEFAULT_VIP_INTERFACE));
    assert_eq!(
        c.dashboard_listen,
        vec!["127.0.0.1:9180".parse::<SocketAddr>().unwrap()]
    );
    assert!(c.health.is_some());
    assert_eq!(c.lifecycle.launch_hook_name, DEFAULT_LAUNCH_HOOK_NAME);
    assert_eq!(c.lifecycle.launch_timeout, DEFAULT_LAUNCH_TIMEOUT);
    assert_eq!(c.lifecycle.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    let peers = c.peers.expect("peers are on by default");
    assert_eq!(peers.bind_addr(), "0.0.0.0:7946".parse::<SocketAddr>().unwrap());
    assert_eq!(peers.detector, PeerConfig::default());
    assert_eq!(
        peers.auth,
        PeerAuthConfig::Keys {
            key_file: "/etc/vipfleet/peer.key".into(),
            previous_key_file: None
        }
    );
}

#[test]
fn peers_need_a_key_unless_insecure_on_purpose() {
    let keyless = GOOD.replace("key_file = \"/etc/vipfleet/peer.key\"", "");
    let err = load(&keyless, &BTreeMap::new(), &[]).unwrap_err().to_string();
    assert!(
        err.contains("peers.key_file") && err.contains("peers.insecure = true"),
        "{err}"
    );
    let insecure = load(&keyless, &BTreeMap::new(), &["peers.insecure=true".into()]).unwrap();
    assert_eq!(insecure.peers.unwrap().auth, PeerAuthConfig::Insecure);
    let off = load(&keyless, &env(&[("VIPFLEET_PEERS_ENABLED", "false")]), &[]).unwrap();
    assert_eq!(off.peers, None);
    let rotating = load(
        GOOD,
        &env(&[("VIPFLEET_PEERS_PREVIOUS_KEY_FILE", "/etc/vipfleet/peer.key.old")]),
        &[],
    )
    .unwrap();
    assert_eq!(
        rotating.peers.unwrap().auth,
        PeerAuthConfig::Keys {
            key_file: "/etc/vipfleet/peer.key".into(),
            previous_key_file: Some("/etc/vipfleet/peer.key.old".into()),
        }
    );
    let both = load(GOOD, &BTreeMap::new(), &["peers.insecure=true".into()]).unwrap_err();
    assert!(both.to_string().contains("choose one"), "{both}");
    let previous_only = load(
        &keyless,
        &BTreeMap::new(),
        &["peers.previous_key_file=/etc/vipfleet/old.key".into()],
    )
    .unwrap_err();
    assert!(
        previous_only.to_string().contains("without peers.key_file"),
        "{previous_only}"
    );
    // An empty value (an unset variable in a template) is no key.
    let empty = load(&keyless, &env(&[("VIPFLEET_PEERS_KEY_FILE", "")]), &[]).unwrap_err();
    assert!(empty.to_string().contains("peers.key_file"), "{empty}");
}

#[test]
fn the_peers_section_is_read_and_can_turn_probes_off() {
    let text = format!(
        "{GOOD}\nport = 8000\nbind = \"10.0.0.5\"\nprobe_interval_ms = 200\n\
         ack_timeout_ms = 40\nindirect_timeout_ms = 80\nconfirm_rounds = 3\n"
    );
    let peers = load(&text, &BTreeMap::new(), &[]).unwrap().peers.unwrap();
    assert_eq!(peers.bind_addr(), "10.0.0.5:8000".parse::<SocketAddr>().unwrap());
    assert_eq!(peers.detector.probe_interval, Duration::from_millis(200));
    assert_eq!(peers.detector.ack_timeout, Duration::from_millis(40));
    assert_eq!(peers.detector.indirect_timeout, Duration::from_millis(80));
    assert_eq!(peers.detector.confirm_rounds, 3);
    let off = load(GOOD, &env(&[("VIPFLEET_PEERS_ENABLED", "false")]), &[]).unwrap();
    assert_eq!(off.peers, None);
}

#[test]
fn a_health_source_is_required_unless_disabled_on_purpose() {
    let without = GOOD.replace("[health]\n    url = \"http://127.0.0.1:8404/healthz\"", "");
    let err = load(&without, &BTreeMap::new(), &[]).unwrap_err().to_string();
    assert!(err.contains("health.disabled = true"), "{err}");
    let c = load(&without, &BTreeMap::new(), &["health.disabled=true".into()]).unwrap();
    assert!(c.health.is_none());
    let both = load(GOOD, &BTreeMap::new(), &["health.disabled=true".into()]).unwrap_err();
    assert!(both.to_string().contains("choose one"), "{both}");
}

#[test]
fn the_launch_hook_keys_are_read() {
    let sets = [
        "lifecycle.launch_hook_name=fleet-launch".to_string(),
        "lifecycle.launch_timeout_ms=90000".to_string(),
    ];
    let c = load(GOOD, &BTreeMap::new(), &sets).unwrap();
    assert_eq!(c.lifecycle.launch_hook_name, "fleet-launch");
    assert_eq!(c.lifecycle.launch_timeout, Duration::from_secs(90));
}

#[test]
fn environment_then_flags_override_the_file() {
    let e = env(&[
        ("VIPFLEET_AWS_TABLE", "from-env"),
        ("VIPFLEET_LEASE_PROFILE", "fast"),
        ("VIPFLEET_VIP_BINDING_ENABLED", "false"),
        ("VIPFLEET_FLEET_ROUTE_TABLES", "rtb-a, rtb-b,rtb-c"),
        ("VIPFLEET_TEST_AWS_ENDPOINT", "ignored: not a config section"),
    ]);
    let c = load(
        GOOD,
        &e,
        &["aws.table=from-flag".into(), "lease.lease_ttl_ms=1500".into()],
    )
    .unwrap();
    assert_eq!(c.table, "from-flag");
    assert_eq!(c.lease.heartbeat_interval, LeaseConfig::FAST.heartbeat_interval);
    assert_eq!(c.lease.lease_ttl, Duration::from_millis(1500));
    assert_eq!(c.vip_interface, None);
    assert_eq!(c.route_tables.len(), 3);
}

#[test]
fn the_cold_read_timings_are_read() {
    let sets = [
        "lease.watch_interval_ms=500".to_string(),
        "lease.cold_refresh_interval_ms=20000".to_string(),
    ];
    let c = load(GOOD, &BTreeMap::new(), &sets).unwrap();
    assert_eq!(c.lease.watch_interval, Duration::from_millis(500));
    assert_eq!(c.lease.cold_refresh_interval, Duration::from_secs(20));
    let c = load(GOOD, &BTreeMap::new(), &["lease.profile=fast".into()]).unwrap();
    assert_eq!(c.lease.watch_interval, LeaseConfig::FAST.watch_interval);
    assert_eq!(c.lease.cold_refresh_interval, LeaseConfig::FAST.cold_refresh_interval);
    let c = load(GOOD, &BTreeMap::new(), &["lease.profile=cheap".into()]).unwrap();
    assert_eq!(c.lease, LeaseConfig::CHEAP);
    assert!(c.lease.cold_reads);
    let c = load(GOOD, &BTreeMap::new(), &["lease.profile=hot".into()]).unwrap();
    assert_eq!(c.lease, LeaseConfig::HOT);
    assert!(!c.lease.cold_reads);
    let c = load(GOOD, &BTreeMap::new(), &["lease.profile=default".into()]).unwrap();
    assert_eq!(c.lease, LeaseConfig::DEFAULT);
}

#[test]
fn bad_values_are_named_in_the_error() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("", &[], "aws.table is required"),
        (GOOD, &["fleet.vips=10.200.0.300"], "10.200.0.300"),
        (GOOD, &["fleet.vips=10.200.0.1,10.200.0.1/32"], "listed twice"),
        (GOOD, &["fleet.vips=10.200.0.0/24,10.200.0.9"], "overlap"),
        (GOOD, &["fleet.route_tables=vpc-1"], "\"vpc-1\""),
        (GOOD, &["lease.lease_ttl_ms=1000"], "must fit in the own lease"),
        (GOOD, &["lease.profile=turbo"], "turbo"),
        (
            GOOD,
            &["lease.watch_interval_ms=0"],
            "watch_interval must be above zero",
        ),
        (
            GOOD,
            &["lease.cold_refresh_interval_ms=0"],
            "cold_refresh_interval must be above zero",
        ),
        (GOOD, &["node.private_ip=10.0.0"], "10.0.0"),
        (GOOD, &["health.url=ftp://x/"], "ftp://x/"),
        (GOOD, &["dashboard.listen=localhost"], "localhost"),
        (GOOD, &["bogus.key=1"], "bogus"),
        (GOOD, &["aws.tabel=x"], "tabel"),
        (GOOD, &["peers.port=0"], "peers.port must not be 0"),
        (GOOD, &["peers.port=70000"], "peers"),
        (GOOD, &["peers.bind=everywhere"], "peers.bind \"everywhere\""),
        (
            GOOD,
            &["peers.ack_timeout_ms=0"],
            "peers: ack_timeout must be above zero",
        ),
        (
            GOOD,
            &["peers.ack_timeout_ms=100"],
            "peers: ack_timeout (100ms) must be below",
        ),
        (GOOD, &["peers.confirm_rounds=0"], "peers: confirm_rounds"),
        (GOOD, &["peers.probe_interval=5"], "probe_interval"),
        ("not toml [", &[], "TOML"),
    ];
    for (text, sets, needle) in cases {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let err = load(text, &BTreeMap::new(), &sets).expect_err(needle).to_string();
        assert!(err.contains(needle), "{sets:?}: {err:?} should mention {needle:?}");
    }
}

#[test]
fn syntax_errors_say_where_but_never_echo_the_line() {
    let secret = "0123456789abcdef0123456789abcdef";
    let text = format!("[aws]\ntable = \"t\"\n[dashboard]\ntoken_file = {secret}\n");
    let err = load(&text, &BTreeMap::new(), &[]).unwrap_err().to_string();
    assert!(err.contains("line 4, column 14"), "{err}");
    assert!(!err.contains(secret), "{err}");
    let err = load("[aws]\ntable = \"\u{e9}t\u{e9}", &BTreeMap::new(), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn vips_inside_the_vpc_are_found() {
    let c = load(GOOD, &BTreeMap::new(), &[]).unwrap();
    let vpc: Vip = "10.200.0.0/16".parse().unwrap();
    assert_eq!(c.vips_inside(&[vpc]).len(), 2);
    assert!(c.vips_inside(&["10.0.0.0/16".parse().unwrap()]).is_empty());
}
