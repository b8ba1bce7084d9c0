//! The HTTP side of the metrics: `GET /metrics` (HEAD too) answers with the text format;
//! anything else gets a one-line 404 or 405. Connections are few (a Prometheus or two), and
//! any local user can open many more and hold them idle, so a scrape must never wait behind
//! them: every connection is accepted at once, one that has not sent its request headers
//! within [`HEADER_TIMEOUT`] is closed, and beyond [`MAX_OPEN`] the connection idle the
//! longest is closed to make room (shed) — new ones are never refused or queued.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
    time::Instant,
};

use super::Scraper;

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Connections held open at once; beyond, the one idle the longest is closed. A few
/// Prometheus servers need a handful; the bound keeps the daemon's descriptors for its
/// real work whatever is thrown at the port.
const MAX_OPEN: usize = 64;
/// A client that has not sent its request headers by then is closed (also between the
/// requests of a kept-alive connection). A scraper sends them at once.
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// How often histogram samples are folded in when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The running endpoint; stops serving when dropped.
pub struct Endpoint {
    pub addr: SocketAddr,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub(super) async fn serve(listen: SocketAddr, scraper: Scraper) -> Result<Endpoint> {
    let listener = TcpListener::bind(listen)
        .await
        .context("cannot listen for metrics scrapes")?;
    let addr = listener.local_addr()?;
    let scraper = Arc::new(scraper);
    let upkeep = {
        let handle = scraper.handle.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        })
    };
    let accept = tokio::spawn(accept_loop(listener, scraper));
    tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
    Ok(Endpoint {
        addr,
        tasks: [accept, upkeep],
    })
}

async fn accept_loop(listener: TcpListener, scraper: Arc<Scraper>) {
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: say so, and do not spin.
                tracing::warn!(error = %e, "metrics: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (id, shed) = lock(&open).admit(Instant::now());
        tokio::spawn(connection(stream, id, shed, open.clone(), scraper.clone()));
    }
}

/// Serves one connection until it ends, times out, or is shed.
async fn connection(
    stream: TcpStream,
    id: u64,
    shed: oneshot::Receiver<()>,
    open: Arc<Mutex<Open>>,
    scraper: Arc<Scraper>,
) {
    let service = {
        let open = open.clone();
        service_fn(move |req| {
            lock(&open).active(id, Instant::now());
            let response = respond(&scraper, &req);
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = served => {}
        // The sender dropped: shed to make room for a newer connection.
        _ = shed => {}
    }
    lock(&open).closed(id);
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock().unwrap_or_else(|e| e.into_inner())
}

/// The open connections, each with when it last began a request (or was accepted) and the
/// handle that closes it when dropped.
#[derive(Default)]
struct Open {
    next_id: u64,
    conns: HashMap<u64, (Instant, oneshot::Sender<()>)>,
}

impl Open {
    /// Registers a new connection, first shedding the one idle the longest if [`MAX_OPEN`]
    /// are open. Returns its id and the receiver that fires when it is shed.
    fn admit(&mut self, now: Instant) -> (u64, oneshot::Receiver<()>) {
        if self.conns.len() >= MAX_OPEN
            && let Some(oldest) = self
                .conns
                .iter()
                .min_by_key(|(_, c)| c.0)
                .map(|(id, _)| *id)
        {
            self.conns.remove(&oldest);
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(id, (now, tx));
        (id, rx)
    }

    /// Connection `id` began a request.
    fn active(&mut self, id: u64, now: Instant) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.0 = now;
        }
    }

    /// Connection `id` ended (or was shed).
    fn closed(&mut self, id: u64) {
        self.conns.remove(&id);
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

fn respond(scraper: &Scraper, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "mxscreen serves its metrics at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics only\n".into());
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match scraper.render() {
        Ok(body) => {
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(TEXT_FORMAT),
            );
            r
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "metrics scrape failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("mxscreen: {e:#}\n"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Beyond [`MAX_OPEN`], the connection idle the longest goes, whatever its age; a
    /// new one is always admitted.
    #[test]
    fn the_longest_idle_connection_is_shed() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut open = Open::default();
        let mut shed: Vec<_> = (0..MAX_OPEN as u64).map(|i| open.admit(at(i))).collect();
        // The first connection began a request since: the second is now idle the longest.
        open.active(0, at(1000));
        let (new, _rx) = open.admit(at(1001));
        assert_eq!(open.conns.len(), MAX_OPEN);
        assert!(open.conns.contains_key(&new) && open.conns.contains_key(&0));
        assert_eq!(
            shed[1].1.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(
            shed[2].1.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        open.closed(new);
        open.closed(new);
        assert_eq!(open.conns.len(), MAX_OPEN - 1);
    }
}
