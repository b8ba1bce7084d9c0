//! Serving the policy protocol: one task per Postfix connection, reused for request after
//! request. Every request is answered from the same [`Oracle`] as the query socket. A
//! malformed request, or one that is not `request=smtpd_access_policy`, is logged and the
//! connection closed, as the protocol asks; Postfix then applies its `default_action`.

use std::{sync::Arc, time::Duration};

use futures::{SinkExt as _, StreamExt as _};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::Semaphore,
};
use tokio_util::codec::Framed;

use super::{
    action::action_for,
    codec::{PolicyCodec, PolicyError, PolicyRequest},
};
use crate::query::Oracle;

/// How long a Postfix connection may sit idle before it is closed (Postfix's own
/// `smtpd_policy_service_max_idle` is 300 s; it reconnects when it needs to).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(330);
/// Connections served at once: each smtpd process holds one, and a busy Postfix runs
/// hundreds (`default_process_limit`); one more waits until one closes, and Postfix's
/// `smtpd_policy_service_timeout` runs meanwhile. An idle one costs a task and a file (the
/// unit's `LimitNOFILE` is above this).
pub const MAX_CONNECTIONS: usize = 4096;

/// A bound policy socket.
pub enum PolicyListener {
    Unix(UnixListener),
    Inet(TcpListener),
}

/// What every connection needs.
pub struct Service {
    pub oracle: Arc<Oracle>,
    /// `policy_service.limit_action`.
    pub limit_action: String,
}

/// Serves until the task is dropped.
pub async fn serve(listener: PolicyListener, service: Arc<Service>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let service = service.clone();
        let accepted = match &listener {
            PolicyListener::Unix(l) => l.accept().await.map(|(s, _)| {
                tokio::spawn(async move {
                    connection(s, &service).await;
                    drop(slot);
                });
            }),
            PolicyListener::Inet(l) => l.accept().await.map(|(s, _)| {
                tokio::spawn(async move {
                    connection(s, &service).await;
                    drop(slot);
                });
            }),
        };
        if let Err(e) = accepted {
            tracing::warn!(error = %e, "policy service accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, service: &Service) {
    let mut framed = Framed::new(stream, PolicyCodec::default());
    loop {
        let request = match tokio::time::timeout(IDLE_TIMEOUT, framed.next()).await {
            Err(_) | Ok(None) => return,
            Ok(Some(Ok(r))) => r,
            Ok(Some(Err(PolicyError::Io(e)))) => {
                tracing::debug!(error = %e, "policy connection failed");
                return;
            }
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "closing the policy connection");
                return;
            }
        };
        let action = match respond(&request, service).await {
            Ok(a) => a,
            Err(why) => {
                tracing::warn!("closing the policy connection: {why}");
                return;
            }
        };
        if framed.send(action.as_str()).await.is_err() {
            return;
        }
    }
}

/// The action for one request, or why the request is not one this service answers.
pub async fn respond(request: &PolicyRequest, service: &Service) -> Result<String, String> {
    match request.get("request") {
        Some("smtpd_access_policy") => {}
        other => {
            return Err(format!(
                "malformed policy request: request={} (this service answers smtpd_access_policy)",
                other.unwrap_or("(missing)")
            ));
        }
    }
    let Some(ip) = request
        .get("client_address")
        .and_then(|a| crate::net::parse_ip(a).ok())
    else {
        // Mail from the host itself (no client address) is not ours to judge.
        return Ok("DUNNO".into());
    };
    // An authenticated client (submission, or AUTH on port 25) is the site's own user: the
    // Exim hookup never refuses one, and neither does this, whatever the order of the
    // restrictions it sits in (`permit_sasl_authenticated` after it, or at CONNECT).
    if request.get("sasl_username").is_some_and(|u| !u.is_empty()) {
        return Ok("DUNNO".into());
    }
    let answer = service.oracle.answer(ip).await;
    Ok(action_for(
        &answer,
        ip,
        request.get("recipient"),
        &service.limit_action,
    ))
}
