//! `trellis`: the Trellis command line. Everything lives in
//! `trellis_control::cli`, so tests can run it in-process.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    trellis_control::cli::main().await
}
