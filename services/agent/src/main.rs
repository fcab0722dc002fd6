//! `vipfleet-agent`: parse the command line, load the configuration, run.
//!
//! Exit codes (sysexits.h names where one fits):
//! - 0: stopped (SIGTERM outside a termination) or drained;
//! - 1: a runtime failure at start-up (AWS unreachable, a port taken, …):
//!   worth restarting;
//! - 2: bad command line;
//! - 69 `EX_UNAVAILABLE`: another process registered this node id;
//! - 75 `EX_TEMPFAIL`: a drain did not finish within its timeout (what is
//!   left moves when the lease runs out);
//! - 78 `EX_CONFIG`: the configuration cannot work.
//!
//! The systemd unit restarts on 1 only (`RestartPreventExitStatus`): a
//! restart would not fix the others.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::error;
use vipfleet_agent::app::{self, RunError};
use vipfleet_agent::aws::dynamo::{init_table, Billing};
use vipfleet_agent::config::{self, AgentConfig};

/// `EX_CONFIG`: the configuration cannot work.
const EXIT_CONFIG: u8 = 78;
/// `EX_UNAVAILABLE`: another process holds this node id.
const EXIT_SUPERSEDED: u8 = 69;
/// `EX_TEMPFAIL`: the drain timed out.
const EXIT_DRAIN_TIMEOUT: u8 = 75;

#[derive(Parser)]
#[command(
    version = vipfleet_agent::build::VERSION_WITH_COMMIT,
    about = "vipfleet node agent: VIP shards by DynamoDB lease, routes in the VPC"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "VIPFLEET_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// The TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override one option: `section.key=value` (after the file and VIPFLEET_* variables).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent until it is stopped (SIGTERM) or drained (termination, or an operator's drain).
    Run(ConfigArgs),
    /// Check the configuration without touching AWS; exit 78 if it is bad.
    CheckConfig(ConfigArgs),
    /// Create the DynamoDB lease table (idempotent), with TTL on `expires_at`.
    InitTable {
        #[arg(long, env = "VIPFLEET_AWS_TABLE")]
        table: String,
        /// `on-demand` or `provisioned` (small fixed capacity).
        #[arg(long, default_value = "on-demand")]
        billing: Billing,
        #[arg(long, env = "VIPFLEET_AWS_REGION")]
        region: Option<String>,
    },
}

/// SDK log targets that print each request's identity, AWS access key id
/// included (at debug and trace; the SDK redacts the secret key and the
/// session token): held at info whatever `VIPFLEET_LOG` asks for, so that no
/// log holds a credential (tests/tests/cli.rs checks).
const IDENTITY_LOG_TARGETS: [&str; 3] = [
    "aws_smithy_runtime::client::orchestrator::endpoints",
    "aws_smithy_runtime::client::orchestrator::auth",
    "aws_sigv4::http_request::sign",
];

fn init_logging(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("VIPFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for target in IDENTITY_LOG_TARGETS {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    // Colour only for a person at a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(args: &ConfigArgs) -> Result<AgentConfig, ExitCode> {
    let env = std::env::vars().collect();
    config::load_file(args.config.as_deref(), &env, &args.sets).map_err(|e| {
        eprintln!("vipfleet-agent: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vipfleet-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::CheckConfig(args) => match load(&args) {
            Ok(config) => {
                println!(
                    "config ok: {} VIPs in {} route tables, table {}, lease ttl {:?}",
                    config.vips.len(),
                    config.route_tables.len(),
                    config.table,
                    config.lease.lease_ttl
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run(args) => {
            let config = match load(&args) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match runtime.block_on(app::run(config)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e}");
                    let code = match e {
                        RunError::Config(_) => {
                            eprintln!("vipfleet-agent: {e}");
                            EXIT_CONFIG
                        }
                        RunError::Superseded => EXIT_SUPERSEDED,
                        RunError::DrainTimeout(_) => EXIT_DRAIN_TIMEOUT,
                        RunError::Startup(_) | RunError::Evicted => 1,
                    };
                    ExitCode::from(code)
                }
            }
        }
        Command::InitTable { table, billing, region } => runtime.block_on(async {
            let sdk = vipfleet_agent::aws::sdk_config(region).await;
            let client = vipfleet_agent::aws::dynamodb_client(&sdk);
            match init_table(&client, &table, billing).await {
                Ok(init) => {
                    println!("{table}: {init}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vipfleet-agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}
