//! `vipfleet-sim`: the fault scenarios in the deterministic simulation, no
//! root and no AWS (see the library). Exits 1 when any seed broke an
//! invariant or the arguments cannot work, as `vipfleet-loadtest sim` does.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Run vipfleet's fault scenarios in the deterministic simulation and print a summary"
)]
struct Cli {
    #[command(flatten)]
    args: vipfleet_sim::SimArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match vipfleet_sim::run(&cli.args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vipfleet-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
