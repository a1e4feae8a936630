//! `bourse load connections`: clients that connect at a ramp rate (or all at once, a
//! connect storm), subscribe to one channel, stay for `--hold` seconds reading what it
//! sends, and leave. Reports connect and subscribe latency, refusals by kind, the events
//! received and dropped connections, and each gateway's memory per connection (its RSS
//! growth over the connections it took, from `/metrics`).

use super::{Common, NodeFigures, Target, histogram, percentiles, progress, scrape};
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit as Slot, Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::{self, Message, protocol::WebSocketConfig};

/// How the clients connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Ws,
    Sse,
}

/// `bourse load connections` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients to connect.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// New connections per second; 0 opens them all at once (a connect storm).
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// At most this many clients connecting and subscribing at a time (0: no bound): with
    /// `--rate 0`, clients connect as fast as the gateways answer, and each client's
    /// latency is the gateway's, not time queued behind the rest of the storm. With a
    /// `--rate`, a client whose time came while every place was taken starts as soon as one
    /// frees.
    #[arg(long, default_value_t = 0)]
    pub in_flight: usize,
    /// WebSocket (`/ws`) or Server-Sent Events (`/sse`).
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,
    /// The channel every client subscribes to (a room's chat is quiet unless people talk).
    #[arg(long, default_value = "chat:KRW-BTC")]
    pub channel: String,
    /// Seconds the clients stay once every one has connected or failed.
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
    /// Seconds one client may take to connect and subscribe before it counts as failed.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Also draw the connected clients over time and the connect latency distribution, as
    /// SVG files in this directory.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

/// What became of one client's attempt.
enum Outcome {
    Connected {
        target: usize,
        connect_us: u64,
        subscribed_us: u64,
    },
    Failed(String),
    /// A connected client's stream ended before the run did.
    Dropped,
}

/// What every client shares.
struct Shared {
    channel: String,
    timeout: Duration,
    received: AtomicU64,
    /// While set, WebSocket clients time each event (its `ts` to its arrival) into
    /// `latency`.
    measuring: AtomicBool,
    latency: Mutex<Histogram<u64>>,
    /// The same since the last [`Crowd::interval`]: latency over time.
    interval: Mutex<Histogram<u64>>,
    stop: watch::Receiver<bool>,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

/// A client's event latencies (ms, from the event's `ts`), merged into the shared
/// histogram in batches so that clients do not contend on it per event.
struct Timings {
    pending: Vec<u64>,
    flushed: Instant,
}

impl Timings {
    fn new() -> Self {
        Timings {
            pending: Vec::new(),
            flushed: Instant::now(),
        }
    }

    fn event(&mut self, shared: &Shared, text: &str) {
        if !shared.measuring.load(Ordering::Relaxed) {
            if !self.pending.is_empty() {
                // The window closed: merge what it counted.
                self.flush(shared);
            }
            return;
        }
        let Some(ts) = event_ts(text) else { return };
        self.pending.push((now_ms() - ts).max(0) as u64);
        // In batches, and at least every 100 ms so that a slow channel counts too.
        if self.pending.len() >= 256 || self.flushed.elapsed() > Duration::from_millis(100) {
            self.flush(shared);
        }
    }

    fn flush(&mut self, shared: &Shared) {
        self.flushed = Instant::now();
        let mut h = shared.latency.lock().unwrap_or_else(|p| p.into_inner());
        let mut interval = shared.interval.lock().unwrap_or_else(|p| p.into_inner());
        for ms in self.pending.drain(..) {
            // In µs, as every histogram of the tool; the resolution is the `ts`'s ms.
            let us = (ms * 1000).max(1);
            let _ = h.record(us);
            let _ = interval.record(us);
        }
    }
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The `ts` of an event frame, found without parsing the whole JSON (the client must not
/// be the bottleneck): the envelope's `"ts":` comes before `"data"`.
pub(super) fn event_ts(text: &str) -> Option<i64> {
    let at = text.find("\"ts\":")? + 5;
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}

pub(super) fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros().max(1) as u64
}

/// A client's socket settings: its reads are small events, its writes one request.
pub(super) fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

pub(super) fn ws_failure(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => format!("http_{}", resp.status().as_u16()),
        tungstenite::Error::Io(e) => format!("io_{:?}", e.kind()).to_lowercase(),
        _ => "handshake".into(),
    }
}

pub(super) fn io_failure(e: &std::io::Error) -> String {
    format!("connect_{:?}", e.kind()).to_lowercase()
}

/// A load client's WebSocket.
pub(super) type ClientSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a WebSocket to `addr`'s `/ws` with a load client's settings; a failure is its kind.
pub(super) async fn ws_open(addr: &str) -> Result<ClientSocket, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| io_failure(&e))?;
    let _ = stream.set_nodelay(true);
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{addr}/ws"),
        stream,
        Some(client_config()),
    )
    .await
    .map_err(|e| ws_failure(&e))?;
    Ok(ws)
}

/// Sends `request` (its `id` is 1) and waits for its answer, skipping stream events: the
/// answer's `result`, or a failure kind (`subscribe_<code>` for a refusal).
pub(super) async fn ws_request(ws: &mut ClientSocket, request: &Value) -> Result<Value, String> {
    ws.send(Message::text(request.to_string()))
        .await
        .map_err(|e| ws_failure(&e))?;
    while let Some(msg) = ws.next().await {
        let text = match msg.map_err(|e| ws_failure(&e))? {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(mut v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if v["id"] != 1 {
            continue;
        }
        if v["ok"] != true {
            return Err(format!(
                "subscribe_{}",
                v["error"]["code"].as_str().unwrap_or("refused")
            ));
        }
        return Ok(v["result"].take());
    }
    Err("closed_before_subscribed".to_string())
}

/// Runs a client's connect-and-subscribe `attempt` within the client timeout, then gives
/// up its `slot`; a failure is reported (by kind, or `timeout`) and is `None`.
async fn connected<T>(
    shared: &Shared,
    slot: Option<Slot>,
    attempt: impl Future<Output = Result<T, String>>,
) -> Option<T> {
    let attempt = tokio::time::timeout(shared.timeout, attempt).await;
    drop(slot);
    match attempt {
        Ok(Ok(done)) => Some(done),
        Ok(Err(kind)) => {
            fail(shared, kind);
            None
        }
        Err(_) => {
            fail(shared, "timeout".into());
            None
        }
    }
}

/// A WebSocket client: connects and subscribes (holding `slot`, its place among those
/// connecting at a time, until then), then reads its channel until told to stop.
async fn ws_client(target: usize, addr: String, shared: Arc<Shared>, slot: Option<Slot>) {
    let started = Instant::now();
    let attempt = async {
        let mut ws = ws_open(&addr).await?;
        let connect_us = micros(started);
        let subscribe = json!({"id": 1, "op": "subscribe", "channels": [shared.channel]});
        ws_request(&mut ws, &subscribe).await?;
        Ok::<_, String>((ws, connect_us, micros(started)))
    };
    let Some((mut ws, connect_us, subscribed_us)) = connected(&shared, slot, attempt).await else {
        return;
    };
    let _ = shared.outcomes.send(Outcome::Connected {
        target,
        connect_us,
        subscribed_us,
    });
    let mut stop = shared.stop.clone();
    let mut timings = Timings::new();
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                return;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    timings.event(&shared, &text);
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    let _ = shared.outcomes.send(Outcome::Dropped);
                    return;
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Counts `\ndata:` line starts across reads with a rolling window of the last bytes.
struct DataLines {
    window: u64,
}

impl DataLines {
    const PATTERN: u64 = u64::from_be_bytes([0, 0, b'\n', b'd', b'a', b't', b'a', b':']);
    const MASK: u64 = 0x0000_ffff_ffff_ffff;

    fn new() -> Self {
        // As if a line had just ended: the body starts a line.
        DataLines {
            window: u64::from(b'\n'),
        }
    }

    fn count(&mut self, bytes: &[u8]) -> u64 {
        let mut n = 0;
        for &b in bytes {
            self.window = (self.window << 8) | u64::from(b);
            if self.window & Self::MASK == Self::PATTERN {
                n += 1;
            }
        }
        n
    }
}

/// An SSE client, as [`ws_client`].
async fn sse_client(target: usize, addr: String, shared: Arc<Shared>, slot: Option<Slot>) {
    let started = Instant::now();
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| io_failure(&e))?;
        let _ = stream.set_nodelay(true);
        let request = format!(
            "GET /sse?channels={} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n",
            shared.channel
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| io_failure(&e))?;
        // The head, then whatever of the body came with it.
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        let end = loop {
            let n = stream.read(&mut buf).await.map_err(|e| io_failure(&e))?;
            if n == 0 {
                return Err("closed_before_subscribed".to_string());
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if head.len() > 16 * 1024 {
                return Err("response_head_too_large".to_string());
            }
        };
        let status = std::str::from_utf8(&head[..end])
            .ok()
            .and_then(|h| h.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        if status != 200 {
            return Err(format!("http_{status}"));
        }
        let us = micros(started);
        Ok((stream, head.split_off(end), us))
    };
    let Some((mut stream, rest, us)) = connected(&shared, slot, attempt).await else {
        return;
    };
    let _ = shared.outcomes.send(Outcome::Connected {
        target,
        connect_us: us,
        subscribed_us: us,
    });
    let mut lines = DataLines::new();
    shared
        .received
        .fetch_add(lines.count(&rest), Ordering::Relaxed);
    let mut stop = shared.stop.clone();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = shared.outcomes.send(Outcome::Dropped);
                    return;
                }
                Ok(n) => {
                    shared.received.fetch_add(lines.count(&buf[..n]), Ordering::Relaxed);
                }
            }
        }
    }
}

fn fail(shared: &Shared, kind: String) {
    let _ = shared.outcomes.send(Outcome::Failed(kind));
}

/// Who connects, how, and how fast: what `connections` and `fanout` share.
#[derive(Debug, Clone)]
pub struct CrowdSpec {
    pub clients: usize,
    /// New connections per second; 0 for all at once.
    pub rate: u32,
    /// Most clients connecting at a time; 0 for no bound.
    pub in_flight: usize,
    pub transport: Transport,
    pub channel: String,
    /// Seconds one client may take to connect and subscribe.
    pub timeout: u64,
}

/// Clients connected to the gateways and reading their channel, until [`Crowd::leave`].
pub struct Crowd {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    results: mpsc::UnboundedReceiver<Outcome>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Clients that connected, per target.
    pub per_target: Vec<u64>,
    /// Connections the server dropped so far.
    pub dropped: u64,
    /// The connect phase's figures, as JSON.
    pub report: Value,
    /// Connect latencies (µs).
    pub connect: Histogram<u64>,
    /// `(seconds, clients connected)` while connecting.
    pub timeline: Vec<(f64, f64)>,
}

impl Crowd {
    /// Connects `spec.clients` clients (capped by the file-descriptor limit, which it
    /// says), spread over `targets` in turn; prints the connect figures as it goes.
    pub async fn connect(spec: &CrowdSpec, targets: &[Target]) -> anyhow::Result<Crowd> {
        let clients = super::within_socket_budget(spec.clients);
        let mut pace = if spec.rate == 0 {
            "all at once".to_string()
        } else {
            format!("{}/s", spec.rate)
        };
        if spec.in_flight > 0 {
            pace = format!("{pace}, at most {} connecting at a time", spec.in_flight);
        }
        println!(
            "connecting {clients} {} clients on {} to {} gateway(s), {pace}",
            spec.transport.name(),
            spec.channel,
            targets.len()
        );
        let (stop_tx, stop) = watch::channel(false);
        let (outcomes, mut results) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            channel: spec.channel.clone(),
            timeout: Duration::from_secs(spec.timeout.max(1)),
            received: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            latency: Mutex::new(histogram()?),
            interval: Mutex::new(histogram()?),
            stop,
            outcomes,
        });
        let started = Instant::now();
        let spawner = {
            let shared = shared.clone();
            let addrs: Vec<String> = targets.iter().map(|t| t.addr.clone()).collect();
            let (rate, transport) = (spec.rate, spec.transport);
            let places = spec.in_flight.min(Semaphore::MAX_PERMITS);
            let gate = (places > 0).then(|| Arc::new(Semaphore::new(places)));
            tokio::spawn(async move {
                let mut tasks = Vec::with_capacity(clients);
                for i in 0..clients {
                    if rate > 0 {
                        let due = started + Duration::from_secs_f64(i as f64 / f64::from(rate));
                        tokio::time::sleep_until(due.into()).await;
                    }
                    // The gate is never closed: a permit always comes.
                    let slot = match &gate {
                        Some(gate) => gate.clone().acquire_owned().await.ok(),
                        None => None,
                    };
                    let (target, shared) = (i % addrs.len(), shared.clone());
                    let addr = addrs[target].clone();
                    tasks.push(match transport {
                        Transport::Ws => tokio::spawn(ws_client(target, addr, shared, slot)),
                        Transport::Sse => tokio::spawn(sse_client(target, addr, shared, slot)),
                    });
                }
                tasks
            })
        };

        let mut connect = histogram()?;
        let mut subscribed = histogram()?;
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        let mut per_target = vec![0u64; targets.len()];
        let mut dropped = 0u64;
        let bar = progress(clients as u64);
        let mut done = 0usize;
        let mut timeline = vec![(0.0, 0.0)];
        while done < clients {
            let Some(outcome) = results.recv().await else {
                break;
            };
            match outcome {
                Outcome::Connected {
                    target,
                    connect_us,
                    subscribed_us,
                } => {
                    per_target[target] += 1;
                    let _ = connect.record(connect_us);
                    let _ = subscribed.record(subscribed_us);
                    done += 1;
                }
                Outcome::Failed(kind) => {
                    *failures.entry(kind).or_default() += 1;
                    done += 1;
                }
                Outcome::Dropped => dropped += 1,
            }
            bar.set_position(done as u64);
            let failed: u64 = failures.values().sum();
            let connected = done as u64 - failed;
            bar.set_message(format!("connected {connected}  failed {failed}"));
            let at = started.elapsed().as_secs_f64();
            if timeline.last().is_none_or(|(t, _)| at - t >= 0.01) || done == clients {
                timeline.push((at, connected as f64));
            }
        }
        bar.finish_and_clear();
        let attempt_secs = started.elapsed().as_secs_f64();
        let tasks = spawner.await.context("the client spawner failed")?;
        let connected: u64 = per_target.iter().sum();
        let failed: u64 = failures.values().sum();
        println!(
            "connected {connected} of {clients} in {attempt_secs:.1} s; failed {failed}{}",
            if failures.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    failures
                        .iter()
                        .map(|(k, n)| format!("{k}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        let (connect_line, connect_json) = percentiles(&connect);
        let (subscribed_line, subscribed_json) = percentiles(&subscribed);
        println!("  connect      {connect_line}");
        println!("  subscribed   {subscribed_line}");
        let report = json!({
            "transport": spec.transport.name(),
            "channel": spec.channel,
            "clients": clients,
            "rate": spec.rate,
            "in_flight": spec.in_flight,
            "connected": connected,
            "failed": failures,
            "attempt_seconds": attempt_secs,
            "connect": connect_json,
            "subscribed": subscribed_json,
        });
        Ok(Crowd {
            shared,
            stop: stop_tx,
            results,
            tasks,
            per_target,
            dropped,
            report,
            connect,
            timeline,
        })
    }

    /// Clients connected.
    pub fn connected(&self) -> u64 {
        self.per_target.iter().sum()
    }

    /// Events the clients received so far.
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Counts the connections the server dropped since the last look.
    pub fn note_drops(&mut self) {
        while let Ok(o) = self.results.try_recv() {
            if matches!(o, Outcome::Dropped) {
                self.dropped += 1;
            }
        }
    }

    /// Starts (or ends) the window in which WebSocket clients time events.
    pub fn measure(&self, on: bool) {
        self.shared.measuring.store(on, Ordering::Relaxed);
    }

    /// The latency of every event timed in the window (from the event's `ts`, ms
    /// resolution; its count is the events), once every client has merged what it counted.
    pub async fn measured(&self) -> Histogram<u64> {
        // Longer than a client's 100 ms merge interval; a client that read nothing since
        // the window closed merges on its next event.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.shared
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The latencies timed since the last call (the histogram starts over).
    pub fn interval(&self) -> Histogram<u64> {
        let mut h = self
            .shared
            .interval
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let taken = h.clone();
        h.reset();
        taken
    }

    /// Closes every client (bounded); the events received in all and the connections the
    /// server dropped.
    pub async fn leave(mut self) -> (u64, u64) {
        let _ = self.stop.send(true);
        let leaving = futures_util::future::join_all(std::mem::take(&mut self.tasks));
        let _ = tokio::time::timeout(Duration::from_secs(10), leaving).await;
        self.note_drops();
        (self.received(), self.dropped)
    }
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        }
    }
}

/// Runs the scenario and prints its figures.
pub async fn run(args: ConnectionsArgs) -> anyhow::Result<()> {
    let targets = Target::parse_all(&args.common.urls)?;
    let token = args.common.admin_token.as_deref();
    let mut before = Vec::new();
    for t in &targets {
        before.push(scrape(t, token).await);
    }
    let spec = CrowdSpec {
        clients: args.clients,
        rate: args.rate,
        in_flight: args.in_flight,
        transport: args.transport,
        channel: args.channel.clone(),
        timeout: args.timeout,
    };
    let mut crowd = Crowd::connect(&spec, &targets).await?;

    // Let the gateways' allocators settle before reading their memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut nodes = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let figures = match (&before[i], scrape(t, token).await) {
            (Ok(b), Ok(a)) => Ok((*b, a)),
            (Err(e), _) => Err(anyhow::anyhow!("before the run: {e:#}")),
            (_, Err(e)) => Err(e.context("after connecting")),
        };
        nodes.push(node_report(t, figures, crowd.per_target[i]));
    }

    let hold = Duration::from_secs(args.hold);
    let held = Instant::now();
    let bar = progress(args.hold.max(1));
    while held.elapsed() < hold {
        tokio::time::sleep(Duration::from_millis(250).min(hold)).await;
        crowd.note_drops();
        bar.set_position(held.elapsed().as_secs());
        bar.set_message(format!(
            "holding; events {}  dropped {}",
            crowd.received(),
            crowd.dropped
        ));
    }
    bar.finish_and_clear();
    if let Some(dir) = &args.plot {
        plot(dir, &crowd)?;
    }
    let mut report = crowd.report.clone();
    let (received, dropped) = crowd.leave().await;
    println!(
        "held {} s: {received} events received, {dropped} connections dropped by the server",
        args.hold
    );
    report["scenario"] = json!("connections");
    report["events_received"] = json!(received);
    report["dropped"] = json!(dropped);
    report["nodes"] = json!(nodes);
    super::write_report(&args.common, &report)
}

/// `connections`' plots: clients connected over time, and the connect latency distribution.
fn plot(dir: &std::path::Path, crowd: &Crowd) -> anyhow::Result<()> {
    use super::plot::{Series, distribution, file, lines};
    let over_time = file(dir, "connections-over-time.svg")?;
    lines(
        &over_time,
        "Clients connected",
        "seconds",
        "clients",
        &[Series {
            name: "connected",
            points: crowd.timeline.clone(),
        }],
    )?;
    let cdf = file(dir, "connect-latency-distribution.svg")?;
    lines(
        &cdf,
        "Connect latency distribution",
        "ms",
        "% of clients at or under",
        &[Series {
            name: "connect",
            points: distribution(&crowd.connect),
        }],
    )?;
    for f in [&over_time, &cdf] {
        println!("plot written to {}", f.display());
    }
    Ok(())
}

/// Prints and returns one gateway's memory figures (from `/metrics` before and after the
/// clients connected), or why there are none: a run goes on without them.
fn node_report(
    target: &Target,
    figures: anyhow::Result<(NodeFigures, NodeFigures)>,
    connected: u64,
) -> Value {
    let (before, after) = match figures {
        Ok(f) => f,
        Err(e) => {
            println!("  {}: no memory figures: {e:#}", target.url);
            return json!({"url": target.url, "connected": connected, "error": format!("{e:#}")});
        }
    };
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let grown = after.rss_bytes - before.rss_bytes;
    let per = if connected > 0 {
        grown / connected as f64
    } else {
        0.0
    };
    println!(
        "  {}: RSS {:.1} MiB -> {:.1} MiB with {} connections: {:.1} KiB per connection ({:.2} CPU s)",
        target.url,
        mib(before.rss_bytes),
        mib(after.rss_bytes),
        after.connections,
        per / 1024.0,
        after.cpu_seconds - before.cpu_seconds
    );
    json!({
        "url": target.url,
        "connected": connected,
        "rss_before_bytes": before.rss_bytes,
        "rss_after_bytes": after.rss_bytes,
        "bytes_per_connection": per,
        "gateway_connections": after.connections,
        "cpu_seconds": after.cpu_seconds - before.cpu_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::{DataLines, event_ts};

    #[test]
    fn finds_the_envelope_ts() {
        let frame =
            r#"{"ch":"trades:KRW-BTC","epoch":"e","seq":3,"ts":1795238291805,"data":{"ts":1}}"#;
        assert_eq!(event_ts(frame), Some(1_795_238_291_805));
        assert_eq!(event_ts(r#"{"id":1,"ok":true}"#), None);
    }

    #[test]
    fn data_lines_are_counted_across_reads() {
        let mut d = DataLines::new();
        assert_eq!(d.count(b"data: {}\n\n: keep-alive\n\nid: 1"), 1);
        assert_eq!(d.count(b":2\nevent: x\nda"), 0);
        assert_eq!(d.count(b"ta: {\"a\":1}\n\ndata:"), 2);
        assert_eq!(d.count(b"metadata: no\n"), 0);
    }
}
