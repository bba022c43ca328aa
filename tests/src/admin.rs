//! A client of the daemon's REST API (`/v1`) and Prometheus `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
pub use prometheus_parse::Scrape;
pub use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A reqwest client bound to one daemon's `admin.http_address`, sending
/// the bearer token if one is set. Cheap to clone (for spawned tasks).
#[derive(Clone)]
pub struct AdminHttp {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Long enough for the slowest request the tests make (a move or drain
/// that waits for sessions to become idle).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl AdminHttp {
    /// A client for the API at `addr`; an unspecified address (`0.0.0.0`)
    /// is reached over loopback.
    pub fn new(addr: SocketAddr) -> Result<AdminHttp> {
        let addr = if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        Ok(AdminHttp {
            base: format!("http://{addr}"),
            token: None,
            http: client(DEFAULT_TIMEOUT)?,
        })
    }

    /// Sends `token` as `Authorization: Bearer` on every call that does
    /// not name its own.
    pub fn with_token(mut self, token: &str) -> AdminHttp {
        self.token = Some(token.to_string());
        self
    }

    /// Connects from `ip` (e.g. 127.0.0.2, to be another loopback client).
    pub fn bound_to(mut self, ip: std::net::IpAddr) -> Result<AdminHttp> {
        self.http = reqwest::Client::builder()
            .no_proxy()
            .local_address(ip)
            .timeout(DEFAULT_TIMEOUT)
            .build()?;
        Ok(self)
    }

    /// Per-request timeout (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Result<AdminHttp> {
        self.http = client(timeout)?;
        Ok(self)
    }

    /// Sends a request with exactly `token` (None: no Authorization
    /// header) and a raw JSON `body`; returns status and body text. For the
    /// authentication checks; everything else uses the client's token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<(StatusCode, String)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await?;
        let status = resp.status();
        Ok((status, resp.text().await?))
    }

    /// A request with the client's token; the body must be JSON.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        let text = body.map(Value::to_string);
        let (status, reply) = self
            .call(method.clone(), path, self.token.as_deref(), text.as_deref())
            .await?;
        let v = serde_json::from_str(&reply)
            .with_context(|| format!("{method} {path}: {status}, not JSON: {reply}"))?;
        Ok((status, v))
    }

    /// GET that must succeed (2xx); the JSON body.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let (status, v) = self.request(Method::GET, path, None).await?;
        ensure!(status.is_success(), "GET {path}: {status}: {v}");
        Ok(v)
    }

    /// POST `body`; status and JSON reply, whatever the status.
    pub async fn post(&self, path: &str, body: Value) -> Result<(StatusCode, Value)> {
        self.request(Method::POST, path, Some(&body)).await
    }

    /// PUT `body`; status and JSON reply, whatever the status.
    pub async fn put(&self, path: &str, body: Value) -> Result<(StatusCode, Value)> {
        self.request(Method::PUT, path, Some(&body)).await
    }

    /// DELETE; status and JSON reply, whatever the status.
    pub async fn delete(&self, path: &str) -> Result<(StatusCode, Value)> {
        self.request(Method::DELETE, path, None).await
    }

    /// A call with the client's token and a raw `body` that must answer
    /// `want`; the JSON body (the error body, for error statuses).
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        want: StatusCode,
    ) -> Result<Value> {
        let (status, text) = self
            .call(method.clone(), path, self.token.as_deref(), body)
            .await?;
        ensure!(
            status == want,
            "{method} {path}: status {status}, wanted {want}: {text}"
        );
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
    }

    /// Waits until the HTTP server answers (it is bound just after the
    /// listeners the daemon harness waits for).
    pub async fn wait_up(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            match self.call(Method::GET, "/metrics", None, None).await {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > Duration::from_secs(10) => {
                    bail!("admin HTTP API not answering at {}: {e}", self.base)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The `/metrics` text with the client's token; must be 200.
    pub async fn metrics_text(&self) -> Result<String> {
        self.metrics_text_with(self.token.as_deref()).await
    }

    /// The `/metrics` text with exactly `token`; must be 200.
    pub async fn metrics_text_with(&self, token: Option<&str>) -> Result<String> {
        let (status, text) = self.call(Method::GET, "/metrics", token, None).await?;
        ensure!(status == StatusCode::OK, "/metrics: {status}: {text}");
        Ok(text)
    }

    /// `/metrics` parsed, with the client's token.
    pub async fn scrape(&self) -> Result<Scrape> {
        self.scrape_with(self.token.as_deref()).await
    }

    /// `/metrics` parsed, with exactly `token`. The exposition must end
    /// with OpenMetrics' `# EOF`.
    pub async fn scrape_with(&self, token: Option<&str>) -> Result<Scrape> {
        let text = self.metrics_text_with(token).await?;
        ensure!(
            text.ends_with("# EOF\n"),
            "exposition not terminated: {text}"
        );
        Ok(Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?)
    }
}

fn client(timeout: Duration) -> Result<reqwest::Client> {
    // No proxy from the environment: the daemon is on loopback.
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()?)
}

/// The first sample `name` whose labels include all of `labels`.
pub fn sample<'a>(
    scrape: &'a Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a prometheus_parse::Value> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| &s.value)
}

/// The value of [`sample`]: counters, gauges and untyped samples as they
/// are (OpenMetrics counters parse as untyped), a histogram as its count.
pub fn metric(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    sample(scrape, name, labels).map(|v| match v {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
        prometheus_parse::Value::Summary(_) => f64::NAN,
    })
}

/// Every counter, gauge and untyped sample, keyed `name{k=v,…}` with the
/// labels sorted: for sums and counts over label sets.
pub fn samples(scrape: &Scrape) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in &scrape.samples {
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), v);
    }
    out
}
