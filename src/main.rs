//! The `bourse` command: CLI and wiring only; everything it starts lives in the workspace
//! crates (docs/DESIGN.md "Layout").

mod bench;
mod ctl;
mod demo;
mod feed;
mod load;
mod node;
mod probe;

use bourse_config::{EXAMPLE_AUTH_SECRET, Settings};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Every node allocates per connection, per request and per event from many threads; see
/// Cargo.toml for why not glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// bourse: a distributed actor runtime for real-time markets.
///
/// Every symbol is a supervised actor; the gateway serves live tickers, trades and candles
/// over WebSocket (/ws), SSE (/sse) and REST (/api/v1). See README.md for a tour.
#[derive(Debug, Parser)]
#[command(name = "bourse", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a node from a TOML config file (BOURSE_SECTION__KEY env vars override it).
    Node {
        /// The node's configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a local node on built-in defaults: 8 simulated KRW markets, data in
    /// ./bourse-data, gateway on 127.0.0.1:8080. Prints where to connect.
    Demo {
        /// Start a local cluster of this many node processes instead (gateways on 8080,
        /// 8081, ...); a node that dies is started again after a backoff; Ctrl-C stops
        /// them all.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
    },
    /// Print the effective configuration (file + environment + defaults) as TOML.
    Config {
        /// A configuration file to read; without it, the defaults plus environment.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Benchmarks against a real node started for the purpose.
    #[command(subcommand)]
    Bench(Bench),
    /// Load against running gateways (any deployment: pass their URLs): `load connections`.
    #[command(subcommand)]
    Load(load::Scenario),
    /// The admin API as tables: `ctl cluster`, `ctl entities --kind symbol`, `ctl entity
    /// symbol KRW-BTC`, `ctl kill symbol KRW-BTC`, `ctl leave node2`.
    Ctl(ctl::CtlArgs),
    /// Publish the built-in simulator's trades (`--to kafka`) for a cluster whose
    /// `feed.kind` is `kafka`.
    Feed(feed::FeedArgs),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Two nodes: local vs cross-node `send` throughput and `ask` round trips.
    Cluster(bench::ClusterArgs),
    /// The book entity in-process, journal on: orders/s and ask latency.
    Book(bench::book::BookArgs),
    /// A local cluster with many WebSocket users trading: orders/s, place-to-ack latency.
    Trading(bench::trading::TradingArgs),
    /// One chat room with thousands of members over a local cluster: fan-out and latency.
    Chat(bench::chat::ChatArgs),
    /// Kafka ingest into a local cluster: trades/s stored by their symbols.
    Kafka(bench::kafka::KafkaArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (settings, markets, demo) = match &cli.command {
        Command::Node { config } => match Settings::load(Some(config)) {
            Ok((s, _)) if s.auth.secret == EXAMPLE_AUTH_SECRET => {
                return fail(
                    "auth.secret: the example secret signs tokens anyone can forge; set your own \
                     (at least 16 characters, the same on every node), or use `bourse demo`",
                );
            }
            Ok((s, m)) => (s, m, false),
            Err(e) => return fail(&e.to_string()),
        },
        Command::Demo { nodes } if *nodes > 1 => {
            let nodes = *nodes;
            return match runtime().map(|rt| rt.block_on(demo::run_cluster(nodes))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => fail(&format!("{e:#}")),
                Err(code) => code,
            };
        }
        Command::Demo { .. } => match Settings::load(None) {
            Ok((mut s, m)) => {
                if s.admin.token.is_none() {
                    match demo::admin_token(&s.node.data_dir) {
                        Ok(t) => s.admin.token = Some(t),
                        Err(e) => return fail(&format!("{e:#}")),
                    }
                }
                if s.auth.secret == EXAMPLE_AUTH_SECRET {
                    match demo::auth_secret(&s.node.data_dir) {
                        Ok(secret) => s.auth.secret = secret,
                        Err(e) => return fail(&format!("{e:#}")),
                    }
                }
                (s, m, true)
            }
            Err(e) => return fail(&e.to_string()),
        },
        Command::Bench(Bench::Cluster(args)) => {
            return match runtime().map(|rt| rt.block_on(bench::cluster(args.clone()))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => fail(&format!("{e:#}")),
                Err(code) => code,
            };
        }
        Command::Bench(Bench::Book(args)) => {
            return match runtime().map(|rt| rt.block_on(bench::book::book(args.clone()))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => fail(&format!("{e:#}")),
                Err(code) => code,
            };
        }
        Command::Bench(Bench::Chat(args)) => {
            return match runtime().map(|rt| rt.block_on(bench::chat::chat(args.clone()))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => fail(&format!("{e:#}")),
                Err(code) => code,
            };
        }
        Command::Bench(Bench::Kafka(args)) => {
            return match runtime().map(|rt| rt.block_on(bench::kafka::kafka(args.clone()))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => fail(&format!("{e:#}")),
                Err(code) => code,
            };
        }
        Command::Bench(Bench::Trading(args)) => {
            return match runtime().map(|rt| rt.block_on(bench::trading::trading(args.clone()))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => fail(&format!("{e:#}")),
                Err(code) => code,
            };
        }
        Command::Load(scenario) => {
            return match runtime().map(|rt| rt.block_on(load::run(scenario.clone()))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => fail(&format!("{e:#}")),
                Err(code) => code,
            };
        }
        Command::Feed(args) => {
            return match runtime().map(|rt| rt.block_on(feed::run(args.clone()))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => fail(&format!("{e:#}")),
                Err(code) => code,
            };
        }
        Command::Ctl(args) => {
            return match ctl::run(args.clone()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}")),
            };
        }
        Command::Config { config } => {
            return match Settings::load(config.as_deref()) {
                Ok((s, _)) => match toml::to_string_pretty(&s) {
                    Ok(text) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&format!("cannot print the configuration: {e}")),
                },
                Err(e) => fail(&e.to_string()),
            };
        }
    };
    node::init_tracing(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(node::run(settings, markets, demo)) {
        Ok(node::Exit::Clean) => ExitCode::SUCCESS,
        Ok(node::Exit::Fatal(reason)) => fail(&reason),
        Err(e) => fail(&format!("{e:#}")),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(&format!("cannot start the async runtime: {e}")))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("bourse: {message}");
    ExitCode::FAILURE
}
