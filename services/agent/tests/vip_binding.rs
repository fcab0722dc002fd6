//! The VIP binding against the real kernel, inside a private network
//! namespace: the test re-executes itself under `unshare --net`, so the
//! host's interfaces are never seen, let alone touched. `ip` is used only as
//! an independent oracle for what the library did over netlink.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use vipfleet_agent::vip_binding::{check_sysctls, BindingError, BoundAddr, LinkKind, VipBinding};
use vipfleet_core::types::Vip;

/// Set in the re-executed child, holding the parent's netns id so the child
/// can prove it is somewhere else before changing anything.
const CHILD_ENV: &str = "VIPFLEET_TEST_PARENT_NETNS";
/// Local connections succeed or fail at once; this only bounds a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const TEST_NAME: &str = "binds_vips_idempotently_in_a_private_netns";

fn netns_id() -> String {
    fs::read_link("/proc/self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn binds_vips_idempotently_in_a_private_netns() {
    if let Ok(parent_netns) = std::env::var(CHILD_ENV) {
        let own = netns_id();
        assert!(
            !own.is_empty() && own != parent_netns,
            "refusing to run: not in a private netns ({own})"
        );
        return in_private_netns();
    }
    let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if uid != 0 {
        loud("*** SKIPPED (needs root): vip_binding netns test runs only as root with CAP_NET_ADMIN ***");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let output = match Command::new("unshare")
        .args(["--net", "--"])
        .arg(&exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, netns_id())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            loud("*** SKIPPED: `unshare` (util-linux) is not installed, cannot make a netns ***");
            return;
        }
        Err(e) => panic!("cannot run unshare: {e}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("--- child in private netns ---\n{stdout}{stderr}--- end child ---");
    for line in stderr.lines().filter(|l| l.contains("SKIPPED")) {
        loud(line);
    }
    if !output.status.success() && stderr.contains("unshare failed: Operation not permitted") {
        loud("*** SKIPPED: no CAP_SYS_ADMIN here, cannot create a network namespace ***");
        return;
    }
    assert!(output.status.success(), "child test failed: {}", output.status);
    // The harness in the child must really have run the body.
    assert!(stdout.contains("1 passed"), "child did not run the test body");
}

/// Writes past the test harness's output capture, so a skip is seen even
/// when the test passes.
fn loud(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n{message}\n");
}

fn in_private_netns() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A fresh namespace's loopback is down, and local delivery (to a VIP as
    // much as to 127.0.0.1) goes through it.
    ip(&["link", "set", "dev", "lo", "up"]).unwrap();
    runtime.block_on(async {
        let mut ran = 0;
        for (kind, name) in [(LinkKind::Dummy, "vft-dummy"), (LinkKind::Ifb, "vft-ifb")] {
            let binding = VipBinding::new(name, kind).unwrap();
            match binding.apply(&[]).await {
                Err(BindingError::KindUnsupported { .. }) => {
                    eprintln!("\n*** SKIPPED {kind} variant: this kernel cannot create {kind} links ***\n");
                    assert!(
                        ip(&["link", "show", name]).is_none(),
                        "a failed create left a link behind"
                    );
                    continue;
                }
                other => {
                    other.unwrap();
                    assert!(binding.uninstall().await.unwrap());
                }
            }
            scenario(kind, name).await;
            ran += 1;
        }
        assert!(ran > 0, "neither dummy nor ifb links work on this kernel");
        refuses_foreign_links().await;
        sysctls_are_read_from_this_namespace();
    });
}

fn vip(s: &str) -> Vip {
    s.parse().unwrap()
}

fn bound(s: &str) -> BoundAddr {
    let (addr, prefix) = s.split_once('/').unwrap();
    BoundAddr {
        addr: addr.parse().unwrap(),
        prefix: prefix.parse().unwrap(),
    }
}

/// Runs `ip` and returns its stdout, or `None` when it fails.
fn ip(args: &[&str]) -> Option<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) is needed as the test oracle");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// IPv4 addresses of `dev` as `ip` reports them, sorted.
fn ipv4_of(dev: &str) -> Vec<String> {
    let out = ip(&["-o", "-4", "addr", "show", "dev", dev]).unwrap();
    let mut addrs: Vec<String> = out
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .map(String::from)
        })
        .collect();
    addrs.sort();
    addrs
}

fn is_up(dev: &str) -> bool {
    let out = ip(&["-o", "link", "show", "dev", dev]).unwrap();
    let flags = out.split('<').nth(1).and_then(|s| s.split('>').next()).unwrap_or("");
    flags.split(',').any(|f| f == "UP")
}

async fn scenario(kind: LinkKind, name: &str) {
    eprintln!("scenario with a {kind} link {name}");
    let binding = VipBinding::new(name, kind).unwrap();
    assert_eq!(binding.bound().await.unwrap(), None);
    assert!(!binding.uninstall().await.unwrap(), "nothing to uninstall yet");

    // First apply: creates the link, brings it up, binds the VIPs.
    let report = binding
        .apply(&[vip("10.200.0.1/32"), vip("10.200.0.2/32")])
        .await
        .unwrap();
    assert!(report.created_link && report.set_link_up, "{report:?}");
    assert_eq!(report.added, vec![bound("10.200.0.1/32"), bound("10.200.0.2/32")]);
    assert_eq!(ipv4_of(name), ["10.200.0.1/32", "10.200.0.2/32"]);
    assert!(is_up(name));
    let details = ip(&["-d", "link", "show", "dev", name]).unwrap();
    assert!(details.contains(&format!("\n    {kind} ")), "{details}");

    // A VIP is a local address: a listener can bind it and be reached.
    let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::new(10, 200, 0, 2), 0))).unwrap();
    std::net::TcpStream::connect_timeout(&listener.local_addr().unwrap(), CONNECT_TIMEOUT).unwrap();

    // Strays on our interface go; another interface's addresses stay.
    ip(&["addr", "add", "10.200.9.9/32", "dev", name]).unwrap();
    ip(&["addr", "add", "10.201.0.5/24", "dev", name]).unwrap();
    ip(&["addr", "add", "10.200.0.3/32", "dev", "lo"]).unwrap();
    let report = binding
        .apply(&[vip("10.200.0.2/32"), vip("10.200.1.0/24")])
        .await
        .unwrap();
    assert!(!report.created_link && !report.set_link_up, "{report:?}");
    assert_eq!(report.kept, vec![bound("10.200.0.2/32")]);
    assert_eq!(report.added, vec![bound("10.200.1.0/24")]);
    let mut removed = report.removed.clone();
    removed.sort();
    assert_eq!(
        removed,
        vec![bound("10.200.0.1/32"), bound("10.200.9.9/32"), bound("10.201.0.5/24")]
    );
    assert_eq!(ipv4_of(name), ["10.200.0.2/32", "10.200.1.0/24"]);
    assert!(ipv4_of("lo").contains(&"10.200.0.3/32".to_string()), "lo was touched");
    ip(&["addr", "del", "10.200.0.3/32", "dev", "lo"]).unwrap();

    // Idempotent: the same config changes nothing.
    let report = binding
        .apply(&[vip("10.200.1.0/24"), vip("10.200.0.2/32")])
        .await
        .unwrap();
    assert!(!report.changed(), "{report:?}");

    // A link taken down by hand comes back up.
    ip(&["link", "set", "dev", name, "down"]).unwrap();
    assert!(!is_up(name));
    let report = binding
        .apply(&[vip("10.200.0.2/32"), vip("10.200.1.0/24")])
        .await
        .unwrap();
    assert!(report.set_link_up && report.added.is_empty(), "{report:?}");
    assert!(is_up(name));
    assert_eq!(
        binding.bound().await.unwrap(),
        Some(vec![bound("10.200.0.2/32"), bound("10.200.1.0/24")])
    );

    // Uninstall removes the interface, once.
    assert!(binding.uninstall().await.unwrap());
    assert!(ip(&["link", "show", "dev", name]).is_none(), "link survived uninstall");
    assert!(!binding.uninstall().await.unwrap());
    assert_eq!(binding.bound().await.unwrap(), None);
}

async fn refuses_foreign_links() {
    // A bridge stands in for any interface that is not ours (the ENI, say).
    ip(&["link", "add", "vft-br", "type", "bridge"]).unwrap();
    for kind in [LinkKind::Dummy, LinkKind::Ifb] {
        let binding = VipBinding::new("vft-br", kind).unwrap();
        let err = binding.apply(&[vip("10.200.0.1/32")]).await.unwrap_err();
        assert!(
            matches!(&err, BindingError::NotOurs { found, .. } if found == "bridge"),
            "{err}"
        );
        assert!(matches!(binding.uninstall().await, Err(BindingError::NotOurs { .. })));
    }
    assert!(ipv4_of("vft-br").is_empty(), "a foreign link got an address");
    assert!(
        ip(&["link", "show", "dev", "vft-br"]).is_some(),
        "a foreign link was deleted"
    );

    // The loopback interface has no link kind at all.
    let err = VipBinding::new("lo", LinkKind::Ifb)
        .unwrap()
        .apply(&[])
        .await
        .unwrap_err();
    assert!(matches!(err, BindingError::NotOurs { .. }), "{err}");
}

fn sysctls_are_read_from_this_namespace() {
    let findings = check_sysctls("vft-ifb");
    for name in ["net.ipv4.ip_nonlocal_bind", "net.ipv4.ip_forward"] {
        let finding = findings.iter().find(|f| f.name == name).unwrap();
        assert!(finding.value.is_some(), "{finding:?}");
    }
    // Only the bridge remains besides lo, and the bridge is checked.
    assert!(
        findings
            .iter()
            .any(|f| f.name.starts_with("net.ipv4.conf.vft-br.rp_filter")),
        "{findings:#?}"
    );
    for f in &findings {
        eprintln!("sysctl {}: {:?} (expected {}) ok={}", f.name, f.value, f.expected, f.ok);
    }
}
