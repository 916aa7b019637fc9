//! HTTP/1.1 upgrades (WebSocket): after the target answered 101, the two
//! connections are joined byte for byte.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

/// Wait for both sides to finish switching, then copy bytes both ways
/// until either side closes, or the proxy shuts down.
pub(super) async fn tunnel(
    client: OnUpgrade,
    target: OnUpgrade,
    mut shutdown: watch::Receiver<bool>,
) {
    let (client, target) = match tokio::try_join!(client, target) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut target = TokioIo::new(target);
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut client, &mut target) => match res {
            Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
            Err(e) => tracing::debug!(error = %e, "upgraded connection failed"),
        },
        _ = crate::run::signalled(&mut shutdown) => {
            tracing::debug!("upgraded connection cut by shutdown");
        }
    }
}
