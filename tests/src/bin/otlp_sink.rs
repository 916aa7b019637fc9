//! `trellis-otlp-sink`: the in-test OTLP receiver (`trellis_tests::otlp`)
//! as a process, for the load harness (`benches/load-observability.sh`):
//! a real collector on loopback that takes spans over OTLP/gRPC and
//! OTLP/HTTP on one port, counts them and keeps none.
//!
//! Once a second it prints the totals so far to standard output:
//!
//! ```text
//! trellis-otlp-sink --listen 127.0.0.1:4317
//! listening on 127.0.0.1:4317
//! spans 0 exports 0
//! spans 10240 exports 20
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use trellis_tests::otlp::OtlpReceiver;

/// How often the totals are printed.
const PRINT_EVERY: Duration = Duration::from_secs(1);

const USAGE: &str = "usage: trellis-otlp-sink --listen IP:PORT";

fn parse_args() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = None;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--listen" => args.next().ok_or("--listen needs IP:PORT")?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => match other.strip_prefix("--listen=") {
                Some(v) => v.to_string(),
                None => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            },
        };
        listen = Some(
            value
                .parse::<SocketAddr>()
                .map_err(|e| format!("--listen {value:?}: {e}"))?,
        );
    }
    listen.ok_or_else(|| USAGE.to_string())
}

fn main() -> ExitCode {
    let listen = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let receiver = match OtlpReceiver::start_counting(listen).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("listening on {}", receiver.addr());
        loop {
            println!(
                "spans {} exports {}",
                receiver.spans_received(),
                receiver.exports()
            );
            tokio::time::sleep(PRINT_EVERY).await;
        }
    })
}
