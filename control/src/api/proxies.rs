//! Proxy registration, status, the watch stream and acknowledgements.

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::join::authorize;
use crate::keys;
use crate::mesh::ProxyPeer;
use crate::push::{HEARTBEAT_INTERVAL, Subscription};
use crate::store::{Op, Txn};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use trellis_config::limits::DEFAULT_ACCOUNT;
use trellis_config::{Ack, ProxyRegistration, Snapshot, WatchEvent};

/// Longest a registration waits for the model to include it, so that the
/// watch that follows finds its snapshot.
const REGISTER_CATCH_UP: Duration = Duration::from_secs(2);

/// `POST /v1/proxies`: register (or re-register) a proxy.
pub async fn register(
    State(app): State<AppState>,
    Extension(peer): Extension<ProxyPeer>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut reg: ProxyRegistration =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
            .map_err(|e| {
                let field = e.path().to_string();
                ApiError::invalid(
                    "the proxy registration is invalid",
                    vec![trellis_config::FieldError {
                        field,
                        message: e.into_inner().to_string(),
                    }],
                )
            })?;
    reg.validate()
        .map_err(|e| ApiError::invalid("the proxy registration is invalid", e.errors))?;
    authorize(&app, &peer, &reg.name)?;
    // The certificate says which account the proxy runs for.
    let account = peer.identity.account().to_owned();
    if reg.account.as_ref().is_some_and(|a| *a != account) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this proxy's certificate is for account {account}, not the account it registered"
            ),
        ));
    }
    reg.account = Some(account);
    let value = serde_json::to_vec(&reg).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let key = keys::proxy(&reg.name);
    let existed = app.repo.store().get(&key).await?.is_some();
    let res = app
        .repo
        .store()
        .txn(Txn::new().then(Op::Put(key, value)))
        .await?;
    let hub = Arc::clone(&app.hub);
    let _ = tokio::spawn(async move { hub.caught_up(res.revision, REGISTER_CATCH_UP).await }).await;
    let status = app.hub.status(&reg.name).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "registration not visible yet; retry",
        )
    })?;
    Ok((
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        Json(status),
    )
        .into_response())
}

/// The account a registration runs for (the default account when it names none).
fn account_of(reg: &ProxyRegistration) -> &str {
    reg.account.as_deref().unwrap_or(DEFAULT_ACCOUNT)
}

/// `GET /v1/proxies`: the caller's account's proxies.
pub async fn list(State(app): State<AppState>, caller: Caller) -> Response {
    let items: Vec<_> = app
        .hub
        .statuses()
        .into_iter()
        .filter(|s| account_of(&s.registration) == caller.account())
        .collect();
    Json(serde_json::json!({ "items": items })).into_response()
}

/// `GET /v1/proxies/{name}`: 404 for another account's proxy.
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let s = app
        .hub
        .status(&name)
        .filter(|s| account_of(&s.registration) == caller.account())
        .ok_or_else(|| ApiError::not_found(format!("no proxy '{name}' is registered")))?;
    Ok(Json(s).into_response())
}

/// `DELETE /v1/proxies/{name}`: forget a proxy (it re-registers if it is
/// still running); 404 for another account's proxy.
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let key = keys::proxy(&name);
    let mine = match app.repo.store().get(&key).await? {
        Some(kv) => serde_json::from_slice::<ProxyRegistration>(&kv.value)
            .is_ok_and(|r| account_of(&r) == caller.account()),
        None => false,
    };
    if !mine {
        return Err(ApiError::not_found(format!(
            "no proxy '{name}' is registered"
        )));
    }
    let forget = Txn::new().then(Op::Delete(key)).then(crate::audit::record(
        &caller.actor(),
        crate::audit::Action::Delete,
        "Proxy",
        &name,
        Some(&name),
        None,
        None,
    ));
    app.repo.store().txn(forget).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Query of the watch call.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct WatchQuery {
    /// The snapshot version the proxy already has (0: none); an equal
    /// current version is not sent again.
    pub version: Option<u64>,
}

fn line(ev: &WatchEvent) -> Bytes {
    let mut v = serde_json::to_vec(ev).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// `GET /v1/proxies/{name}/watch?version=N`: newline-delimited JSON
/// [`WatchEvent`]s, a snapshot whenever this proxy's view changes and a
/// heartbeat every few seconds, until the client goes away.
pub async fn watch(
    State(app): State<AppState>,
    Extension(peer): Extension<ProxyPeer>,
    Path(name): Path<String>,
    Query(q): Query<WatchQuery>,
) -> Result<Response, ApiError> {
    authorize(&app, &peer, &name)?;
    let sub = app.hub.subscribe(&name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no proxy '{name}' is registered: POST /v1/proxies first"
        ))
    })?;
    if let Some(v) = q.version.filter(|v| *v > 0) {
        // The proxy says what it runs: after a control-plane restart that is
        // all there is to know, and an unchanged view is not sent again.
        app.hub.ack(&name, v, None);
    }
    struct State {
        sub: Subscription,
        have: u64,
        first: bool,
        heartbeat: tokio::time::Interval,
        shutdown: tokio::sync::watch::Receiver<bool>,
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    let state = State {
        sub,
        have: q.version.unwrap_or(0),
        first: true,
        heartbeat,
        shutdown: app.shutdown.clone(),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.first {
                st.first = false;
                let snap: Arc<Snapshot> = st.sub.rx.borrow_and_update().clone();
                if snap.version != 0 && snap.version != st.have {
                    st.have = snap.version;
                    st.sub.touch();
                    return Some((
                        Ok::<_, std::convert::Infallible>(line(&WatchEvent::Snapshot {
                            snapshot: (*snap).clone(),
                        })),
                        st,
                    ));
                }
                continue;
            }
            enum Next {
                Stop,
                Changed,
                Beat,
            }
            let next = tokio::select! {
                // End the stream when the control plane stops, so a graceful
                // shutdown does not wait for proxies to hang up; they
                // reconnect to another replica (or this one, restarted).
                _ = st.shutdown.wait_for(|stop| *stop) => Next::Stop,
                // An error means the proxy was removed.
                changed = st.sub.rx.changed() => if changed.is_ok() { Next::Changed } else { Next::Stop },
                _ = st.heartbeat.tick() => Next::Beat,
            };
            match next {
                Next::Stop => return None,
                Next::Changed => {
                    let snap = st.sub.rx.borrow_and_update().clone();
                    if snap.version == st.have || snap.version == 0 {
                        continue;
                    }
                    st.have = snap.version;
                    st.sub.touch();
                    return Some((
                        Ok(line(&WatchEvent::Snapshot {
                            snapshot: (*snap).clone(),
                        })),
                        st,
                    ));
                }
                Next::Beat => {
                    st.sub.touch();
                    let version = st.have;
                    return Some((Ok(line(&WatchEvent::Heartbeat { version })), st));
                }
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `POST /v1/proxies/{name}/ack`
pub async fn ack(
    State(app): State<AppState>,
    Extension(peer): Extension<ProxyPeer>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&app, &peer, &name)?;
    let ack: Ack = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid ack: {e}")))?;
    if let Some(err) = &ack.error {
        tracing::warn!(proxy = %name, version = ack.version, error = %err, "proxy rejected a snapshot");
    }
    if !app.hub.ack(&name, ack.version, ack.error) {
        return Err(ApiError::not_found(format!(
            "no proxy '{name}' is registered"
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
