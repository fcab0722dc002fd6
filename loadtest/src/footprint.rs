//! The agents' footprint over a scenario: resident memory and CPU, read
//! from `/proc` at the start and the end of the load. The README reports
//! the idle numbers, which the `steady` scenario gives: client load flows
//! through haproxy, and the agents only keep their leases and check their
//! routes.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// `/proc/<pid>/stat` counts CPU time in USER_HZ, which Linux fixes at 100
/// on every mainstream architecture (it is part of the ABI, unlike HZ).
const USER_HZ: f64 = 100.0;
const KIB_PER_MIB: f64 = 1024.0;

/// CPU time a process has used so far, and when that was read.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    pid: u32,
    cpu_ticks: u64,
    rss_kib: u64,
    at: Instant,
}

/// A range over the agents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if values.is_empty() {
            Self::default()
        } else {
            Self { min, max }
        }
    }
}

/// What the report records.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Footprint {
    /// Agents that ran from the start to the end of the load.
    pub agents: usize,
    /// Resident memory at the end of the load.
    pub rss_mib: Spread,
    /// Resident memory of every agent running at the start of the load...
    #[serde(default)]
    pub rss_start_mib: Spread,
    /// ...and at its end, agents started during the run included (a long
    /// run's faults restart some).
    #[serde(default)]
    pub rss_end_mib: Spread,
    /// Average CPU over the load, percent of one core.
    pub cpu_percent: Spread,
    /// The cargo profile of this binary; the lab runs the agent built with it.
    pub build: String,
}

impl Footprint {
    pub fn summary_line(&self) -> String {
        format!(
            "agent footprint ({} agents, {} build): RSS {:.1}-{:.1} MiB, CPU {:.2}-{:.2} % of a core",
            self.agents, self.build, self.rss_mib.min, self.rss_mib.max, self.cpu_percent.min, self.cpu_percent.max
        )
    }

    /// Resident memory at the start and the end of the run, every agent.
    pub fn rss_line(&self) -> String {
        format!(
            "agent RSS: start {:.1}-{:.1} MiB, end {:.1}-{:.1} MiB",
            self.rss_start_mib.min, self.rss_start_mib.max, self.rss_end_mib.min, self.rss_end_mib.max
        )
    }
}

/// utime + stime of `pid`, if it runs.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from after its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // After the name: state is field 3 of the man page, utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples every pid that runs now.
pub fn start(pids: &[u32]) -> Vec<CpuSample> {
    pids.iter()
        .filter_map(|&pid| {
            Some(CpuSample {
                pid,
                cpu_ticks: cpu_ticks(pid)?,
                rss_kib: rss_kib(pid)?,
                at: Instant::now(),
            })
        })
        .collect()
}

/// Resident memory of the pids that run now.
pub fn rss_of(pids: &[u32]) -> Spread {
    let rss: Vec<f64> = pids
        .iter()
        .filter_map(|&pid| rss_kib(pid))
        .map(|kib| kib as f64 / KIB_PER_MIB)
        .collect();
    Spread::of(&rss)
}

/// The footprint of the processes sampled by [`start`] that still run;
/// `now_running` are the agents at the end.
pub fn finish(samples: &[CpuSample], now_running: &[u32]) -> Footprint {
    let mut rss = Vec::new();
    let mut cpu = Vec::new();
    for s in samples {
        let (Some(ticks), Some(kib)) = (cpu_ticks(s.pid), rss_kib(s.pid)) else {
            continue;
        };
        let seconds = s.at.elapsed().as_secs_f64();
        if ticks < s.cpu_ticks || seconds <= 0.0 {
            continue; // the pid was reused
        }
        rss.push(kib as f64 / KIB_PER_MIB);
        cpu.push((ticks - s.cpu_ticks) as f64 / USER_HZ / seconds * 100.0);
    }
    let start: Vec<f64> = samples.iter().map(|s| s.rss_kib as f64 / KIB_PER_MIB).collect();
    Footprint {
        agents: rss.len(),
        rss_mib: Spread::of(&rss),
        rss_start_mib: Spread::of(&start),
        rss_end_mib: rss_of(now_running),
        cpu_percent: Spread::of(&cpu),
        build: if cfg!(debug_assertions) { "dev" } else { "release" }.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_process_shows_cpu_and_memory() {
        let me = std::process::id();
        let samples = start(&[me, u32::MAX]);
        assert_eq!(samples.len(), 1, "a pid that does not exist is left out");
        let spin_until = Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < spin_until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 1);
        let footprint = finish(&samples, &[me]);
        assert_eq!(footprint.agents, 1);
        assert!(footprint.rss_start_mib.min > 0.0, "{footprint:?}");
        assert!(footprint.rss_end_mib.min > 0.0, "{footprint:?}");
        assert!(footprint.rss_mib.min > 0.0, "{footprint:?}");
        // This thread spun the whole time; the test harness may be descheduled,
        // so only ask that some CPU was counted and no more than all cores.
        assert!(footprint.cpu_percent.max > 0.0, "{footprint:?}");
        assert!(footprint.cpu_percent.max < 100.0 * 64.0, "{footprint:?}");
    }

    #[test]
    fn spread_of_nothing_is_zero() {
        assert_eq!(Spread::of(&[]), Spread::default());
        assert_eq!(Spread::of(&[2.0, 1.0, 3.0]), Spread { min: 1.0, max: 3.0 });
    }
}
