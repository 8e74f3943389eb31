//! `loadgen`: an HTTPS load generator for clickedge (and any HTTPS server), on tokio and rustls.
//!
//! ```text
//! cargo bench --bench loadgen -- --help
//! cargo bench --bench loadgen -- --target 127.0.0.1:8443 --ca clickedge-data/ca.pem \
//!     --sni 'links{0..99}.example.com' --mint-admin http://127.0.0.1:9180 \
//!     --admin-token-file clickedge-data/admin-token --register --mint-per-name 5 \
//!     --mode new-conn --kx x25519mlkem768 --rate 500 --duration 10s
//! ```
//!
//! Pin it to another core than the server (`taskset -c 1 target/release/deps/loadgen-* ...`).
//! Under `cargo test` (no arguments) it only says how to use it; `cargo bench --bench e2e`
//! exercises it end to end.

#[path = "support/client.rs"]
#[allow(dead_code)] // shared with the e2e bench, which uses other parts
mod client;
#[path = "support/hist.rs"]
#[allow(dead_code)] // shared with the e2e bench, which uses other parts
mod hist;
#[path = "support/loadgen.rs"]
#[allow(dead_code)] // shared with the e2e bench, which uses other parts
mod loadgen;
#[path = "support/shares.rs"]
#[allow(dead_code)] // shared with the e2e bench, which uses other parts
mod shares;
#[path = "support/targets.rs"]
#[allow(dead_code)] // shared with the e2e bench, which uses other parts
mod targets;

use clap::Parser as _;

/// HTTPS load generator: many SNI names, new connection per request or keep-alive (HTTP/1.1,
/// h2), post-quantum or X25519 key share, fixed rate (open loop) or flat out.
#[derive(clap::Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(flatten)]
    load: loadgen::LoadArgs,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().all(|a| a == "--bench") {
        // `cargo test --all-targets` and a bare `cargo bench` run every bench without arguments.
        eprintln!(
            "loadgen: nothing to do without --target; see `cargo bench --bench loadgen -- --help`"
        );
        return;
    }
    let cli = Cli::parse();
    let json = cli.load.json;
    match loadgen::run_blocking(cli.load) {
        Ok(summary) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&summary).expect("summary serialises")
                );
            } else {
                print!("{}", summary.text());
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    }
}
