//! The HTTP side of the metrics: `GET /metrics` (HEAD too) answers with the text format;
//! anything else gets a one-line 404 or 405. Connections are few (a Prometheus or two), so
//! they are bounded and idle ones are cut, and a scrape is answered on the spot.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

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
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};

use super::Scraper;

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
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
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: say so, and do not spin.
                tracing::warn!(error = %e, "metrics: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let scraper = scraper.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let scraper = scraper.clone();
                async move { Ok::<_, Infallible>(respond(&scraper, &req)) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
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
