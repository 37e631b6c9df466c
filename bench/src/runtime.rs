//! The runtime suite: local sends against plain actix, remote throughput
//! and round trips against raw quinn with the node's own TLS and transport
//! settings.
//!
//! Every pair runs the same traffic pattern on the same threads: local
//! sends on one thread, remote ones with the receiver and the sender on a
//! thread each. Each figure is the best of a few runs, for the baseline and
//! for ours alike.

use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Handler, Recipient};
use anyhow::{Context, anyhow};
use bytes::Bytes;
use strata_runtime::codec::{FrameDecoder, PROTOCOL_VERSION};
use strata_runtime::tls::{self, QuicTimeouts};
use strata_runtime::{
    Blob, CertificateAuthority, Node, NodeConfig, Process, ProcessContext, Role, SpawnOptions,
    TlsMaterial, Upid,
};

use crate::report::{Better, Measure, Row, Target};

/// Local messages between acknowledgements.
const LOCAL_BATCH: u64 = 1000;
/// Remote messages in flight before the first acknowledgement.
const REMOTE_WINDOW: u64 = 16_384;
/// Remote messages per acknowledgement.
const REMOTE_ACK_EVERY: u64 = 4096;
/// Bytes per write, as the node's writer batches: frames gathered into one
/// contiguous chunk of about this size.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Runs per figure; the best one counts.
const RUNS: usize = 3;
/// Longest any single run may take before the benchmark reports a stall.
const STALL: Duration = Duration::from_secs(120);

pub fn run(scale: f64, only: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let ca = CertificateAuthority::generate("strata-bench")?;
    let scaled = |count: u64| ((count as f64 * scale) as u64).max(LOCAL_BATCH);
    let wanted = |group: &str| only.is_none_or(|only| only == group);
    let mut rows = Vec::new();

    if wanted("local") {
        let count = scaled(2_000_000);
        let baseline = best_of(|| local_actix(count))?;
        let ours = best_of(|| local_strata(&ca, count))?;
        let measure = Measure {
            unit: "msgs/s",
            baseline_name: "actix do_send, same batching",
            better: Better::Higher,
            target: Target::Ratio(0.9),
        };
        rows.push(Row::new("local send", measure, baseline, ours));
    }

    if wanted("remote") {
        for (size, label, count) in [(64, "64 B", 300_000), (1024, "1 KiB", 150_000)] {
            let count = scaled(count);
            let per_message = best_of(|| remote_quinn(&ca, size, count, Writes::PerMessage))?;
            let ours = best_of(|| remote_strata(&ca, size, count * 4))?;
            let bulk = best_of(|| remote_quinn(&ca, size, count * 4, Writes::Coalesced))?;
            let measure = Measure {
                unit: "msgs/s",
                baseline_name: "raw quinn, one write per framed message",
                better: Better::Higher,
                target: Target::Ratio(0.8),
            };
            rows.push(Row::new(
                format!("remote throughput {label}"),
                measure,
                per_message,
                ours,
            ));
            let measure = Measure {
                unit: "msgs/s",
                baseline_name: "raw quinn, frames copied into 64 KiB writes (bulk ceiling)",
                better: Better::Higher,
                target: Target::None,
            };
            rows.push(Row::new(
                format!("  {label} against the bulk ceiling"),
                measure,
                bulk,
                ours,
            ));
        }
    }

    if wanted("round-trip") {
        let count = scaled(10_000);
        let baseline = round_trips_quinn(&ca, count)?;
        let ours = round_trips_strata(&ca, count)?;
        let measure = Measure {
            unit: "µs",
            baseline_name: "raw quinn ping-pong",
            better: Better::Lower,
            target: Target::Ratio(1.5),
        };
        for (label, percentile) in [("p50", 50), ("p99", 99)] {
            rows.push(Row::new(
                format!("remote round trip {label}"),
                measure,
                micros(percentile_of(&baseline, percentile)),
                micros(percentile_of(&ours, percentile)),
            ));
        }
    }
    Ok(rows)
}

fn best_of(mut run: impl FnMut() -> anyhow::Result<f64>) -> anyhow::Result<f64> {
    let mut best: f64 = 0.0;
    for _ in 0..RUNS {
        best = best.max(run()?);
    }
    Ok(best)
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn percentile_of(samples: &[Duration], percentile: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted
        .get((sorted.len() * percentile / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn rate(count: u64, start: Instant, end: Instant) -> f64 {
    count as f64 / end.duration_since(start).as_secs_f64()
}

fn timeouts() -> QuicTimeouts {
    QuicTimeouts {
        idle_timeout: Duration::from_secs(5),
        keep_alive_interval: Duration::from_secs(1),
    }
}

fn node_config(material: TlsMaterial) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig::new("127.0.0.1:0".parse()?, material);
    let timeouts = timeouts();
    config.quic.idle_timeout = timeouts.idle_timeout;
    config.quic.keep_alive_interval = timeouts.keep_alive_interval;
    Ok(config)
}

// ---- local: plain actix ----------------------------------------------------

struct Item;
impl actix::Message for Item {
    type Result = ();
}
struct Ack;
impl actix::Message for Ack {
    type Result = ();
}
struct Register(Recipient<Ack>);
impl actix::Message for Register {
    type Result = ();
}

struct ActixSink {
    received: u64,
    total: u64,
    source: Option<Recipient<Ack>>,
    done: Option<tokio::sync::oneshot::Sender<Instant>>,
}

impl Actor for ActixSink {
    type Context = actix::Context<Self>;
}

impl Handler<Register> for ActixSink {
    type Result = ();
    fn handle(&mut self, register: Register, _: &mut Self::Context) {
        self.source = Some(register.0);
    }
}

impl Handler<Item> for ActixSink {
    type Result = ();
    fn handle(&mut self, _: Item, _: &mut Self::Context) {
        self.received += 1;
        if self.received.is_multiple_of(LOCAL_BATCH)
            && let Some(source) = &self.source
        {
            source.do_send(Ack);
        }
        if self.received == self.total
            && let Some(done) = self.done.take()
        {
            let _ = done.send(Instant::now());
        }
    }
}

struct ActixSource {
    sink: actix::Addr<ActixSink>,
    sent: u64,
    total: u64,
}

impl ActixSource {
    fn send_batch(&mut self) {
        let batch = LOCAL_BATCH.min(self.total - self.sent);
        for _ in 0..batch {
            self.sink.do_send(Item);
        }
        self.sent += batch;
    }
}

impl Actor for ActixSource {
    type Context = actix::Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        self.sink.do_send(Register(ctx.address().recipient()));
        self.send_batch();
    }
}

impl Handler<Ack> for ActixSource {
    type Result = ();
    fn handle(&mut self, _: Ack, _: &mut Self::Context) {
        self.send_batch();
    }
}

fn local_actix(total: u64) -> anyhow::Result<f64> {
    actix_rt::System::new().block_on(async move {
        let (done, finished) = tokio::sync::oneshot::channel();
        let sink = ActixSink {
            received: 0,
            total,
            source: None,
            done: Some(done),
        }
        .start();
        let start = Instant::now();
        ActixSource {
            sink,
            sent: 0,
            total,
        }
        .start();
        let end = tokio::time::timeout(STALL, finished)
            .await
            .context("actix baseline stalled")??;
        Ok(rate(total, start, end))
    })
}

// ---- ours: the processes ----------------------------------------------------

/// Counts what it receives, acknowledges every `ack_every` to the sender,
/// and reports the moment the last of `total` arrived.
struct Sink<M> {
    received: u64,
    total: u64,
    ack_every: u64,
    done: std_mpsc::Sender<Instant>,
    _message: std::marker::PhantomData<fn(M)>,
}

impl<M> Sink<M> {
    fn new(total: u64, ack_every: u64, done: std_mpsc::Sender<Instant>) -> Sink<M> {
        Sink {
            received: 0,
            total,
            ack_every,
            done,
            _message: std::marker::PhantomData,
        }
    }
}

impl<M: strata_runtime::Message> Process for Sink<M> {
    type Message = M;

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, _: M) {
        self.received += 1;
        if self.received.is_multiple_of(self.ack_every) {
            let _ = ctx.send(&from, self.received);
        }
        if self.received == self.total {
            let _ = self.done.send(Instant::now());
        }
    }
}

struct Source {
    sink: Upid,
    sent: u64,
    total: u64,
    window: u64,
    step: u64,
    payload: Option<Blob>,
}

impl Source {
    fn send(&mut self, ctx: &mut ProcessContext<'_, Self>, count: u64) {
        let count = count.min(self.total - self.sent);
        for _ in 0..count {
            let result = match &self.payload {
                Some(payload) => ctx.send(&self.sink, payload.clone()),
                None => ctx.send(&self.sink, self.sent),
            };
            if let Err(error) = result {
                // The pattern never fills a queue; if it did, the run
                // would stall and be reported as such.
                eprintln!("benchmark send refused: {error}");
            }
            self.sent += 1;
        }
    }
}

impl Process for Source {
    type Message = u64;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let window = self.window;
        self.send(ctx, window);
    }

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, _: Upid, _acknowledged: u64) {
        let step = self.step;
        self.send(ctx, step);
    }
}

fn local_strata(ca: &CertificateAuthority, total: u64) -> anyhow::Result<f64> {
    let (done, finished) = std_mpsc::channel();
    let (started, start_time) = std_mpsc::channel();
    let (_, stop, node) = node_thread(
        "local",
        ca.issue(Role::Framework, "bench-local")?,
        move |node| {
            let sink = node.spawn(
                "sink",
                move || Sink::<u64>::new(total, LOCAL_BATCH, done.clone()),
                SpawnOptions::default(),
            )?;
            let _ = started.send(Instant::now());
            Ok(node.spawn(
                "source",
                move || Source {
                    sink: sink.clone(),
                    sent: 0,
                    total,
                    window: LOCAL_BATCH,
                    step: LOCAL_BATCH,
                    payload: None,
                },
                SpawnOptions::default(),
            )?)
        },
    )?;
    let start = start_time.recv_timeout(Duration::from_secs(30))?;
    let end = finished.recv_timeout(STALL).context("local send stalled")?;
    let _ = stop.send(());
    join(node)?;
    Ok(rate(total, start, end))
}

// ---- remote: threads --------------------------------------------------------

/// Runs `body` on its own thread with a current-thread actix system (which
/// also serves plain tokio code) until `body` returns.
fn on_thread<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<thread::JoinHandle<anyhow::Result<T>>> {
    Ok(thread::Builder::new().name(name.to_owned()).spawn(body)?)
}

fn join<T>(handle: thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    handle
        .join()
        .map_err(|_| anyhow!("benchmark thread panicked"))?
}

/// Starts a node on its own thread hosting what `spawn` spawns; returns
/// the spawned address, a stop switch and the thread.
fn node_thread(
    name: &'static str,
    material: TlsMaterial,
    spawn: impl FnOnce(&Node) -> anyhow::Result<Upid> + Send + 'static,
) -> anyhow::Result<(
    Upid,
    tokio::sync::oneshot::Sender<()>,
    thread::JoinHandle<anyhow::Result<()>>,
)> {
    let (ready, announced) = std_mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = on_thread(name, move || {
        actix_rt::System::new().block_on(async move {
            let node = Node::bind(node_config(material)?).await?;
            let pid = spawn(&node)?;
            let _ = ready.send(pid);
            let _ = stopped.await;
            node.shutdown();
            Ok(())
        })
    })?;
    let pid = announced
        .recv_timeout(Duration::from_secs(30))
        .context("benchmark node did not start")?;
    Ok((pid, stop, handle))
}

fn remote_strata(ca: &CertificateAuthority, size: usize, total: u64) -> anyhow::Result<f64> {
    let (done, finished) = std_mpsc::channel();
    let (sink, stop_sink, sink_thread) = node_thread(
        "sink",
        ca.issue(Role::Framework, "bench-sink")?,
        move |node| {
            Ok(node.spawn(
                "sink",
                move || Sink::<Blob>::new(total, REMOTE_ACK_EVERY, done.clone()),
                SpawnOptions::default(),
            )?)
        },
    )?;
    let (started, start_time) = std_mpsc::channel();
    let material = ca.issue(Role::Framework, "bench-source")?;
    let (stop_source, source_stopped) = tokio::sync::oneshot::channel::<()>();
    let source_thread = on_thread("source", move || {
        actix_rt::System::new().block_on(async move {
            let node = Node::bind(node_config(material)?).await?;
            // Connected before the clock starts, as the baseline is.
            node.connect(sink.addr()).await?;
            let _ = started.send(Instant::now());
            node.spawn(
                "source",
                move || Source {
                    sink: sink.clone(),
                    sent: 0,
                    total,
                    window: REMOTE_WINDOW,
                    step: REMOTE_ACK_EVERY,
                    payload: Some(Blob(vec![0xAB; size])),
                },
                SpawnOptions::default(),
            )?;
            let _ = source_stopped.await;
            node.shutdown();
            Ok(())
        })
    })?;
    let start = start_time
        .recv_timeout(Duration::from_secs(30))
        .context("source did not connect")?;
    let end = finished
        .recv_timeout(STALL)
        .context("remote send stalled")?;
    let _ = stop_source.send(());
    let _ = stop_sink.send(());
    join(source_thread)?;
    join(sink_thread)?;
    Ok(rate(total, start, end))
}

// ---- remote: raw quinn ------------------------------------------------------------

fn raw_frame(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

fn raw_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A raw quinn server on its own thread: accepts one connection and one
/// stream and runs `serve` on it.
fn raw_server<F, Fut>(
    ca: &CertificateAuthority,
    serve: F,
) -> anyhow::Result<(std::net::SocketAddr, thread::JoinHandle<anyhow::Result<()>>)>
where
    F: FnOnce(quinn::SendStream, quinn::RecvStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (server_config, _) = tls::quic_configs(
        &ca.issue(Role::Framework, "raw-server")?,
        PROTOCOL_VERSION,
        &timeouts(),
    )?;
    let (ready, announced) = std_mpsc::channel();
    let handle = on_thread("raw-server", move || {
        raw_runtime()?.block_on(async move {
            let endpoint = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse()?)?;
            let _ = ready.send(endpoint.local_addr()?);
            let incoming = endpoint.accept().await.context("no connection")?;
            let connection = incoming.await?;
            let (send, recv) = connection.accept_bi().await?;
            serve(send, recv).await?;
            connection.closed().await;
            Ok(())
        })
    })?;
    let addr = announced.recv_timeout(Duration::from_secs(30))?;
    Ok((addr, handle))
}

async fn raw_client(
    ca: &CertificateAuthority,
    server: std::net::SocketAddr,
) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
    let (_, client_config) = tls::quic_configs(
        &ca.issue(Role::Framework, "raw-client")?,
        PROTOCOL_VERSION,
        &timeouts(),
    )?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(client_config);
    let connection = endpoint.connect(server, tls::SERVER_NAME)?.await?;
    Ok((endpoint, connection))
}

/// How the raw quinn sender writes its frames.
#[derive(Debug, Clone, Copy)]
enum Writes {
    /// One `write_all` per framed message: what a plain raw-quinn program
    /// sending messages does.
    PerMessage,
    /// Frames copied into one contiguous buffer per 64 KiB: the bulk
    /// ceiling, which the node's writer also aims at.
    Coalesced,
}

fn remote_quinn(
    ca: &CertificateAuthority,
    size: usize,
    total: u64,
    writes: Writes,
) -> anyhow::Result<f64> {
    let (done, finished) = std_mpsc::channel();
    let (server, server_thread) = raw_server(ca, move |_send, mut recv| async move {
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut received = 0u64;
        while received < total {
            let chunk = recv
                .read_chunk(64 * 1024, true)
                .await?
                .context("stream ended early")?;
            decoder.push(&chunk.bytes);
            while decoder.next_frame()?.is_some() {
                received += 1;
            }
        }
        let _ = done.send(Instant::now());
        Ok(())
    })?;
    let ca = CertificateAuthority::from_pem(&ca.certificate_pem(), &ca.key_pem())?;
    let (started, start_time) = std_mpsc::channel();
    let client_thread = on_thread("raw-client", move || {
        raw_runtime()?.block_on(async move {
            let (endpoint, connection) = raw_client(&ca, server).await?;
            let (mut send, _recv) = connection.open_bi().await?;
            let _ = started.send(Instant::now());
            let payload = vec![0xABu8; size];
            match writes {
                Writes::PerMessage => {
                    for _ in 0..total {
                        send.write_all(&raw_frame(&payload)).await?;
                    }
                }
                Writes::Coalesced => {
                    let mut sent = 0u64;
                    let mut batch = bytes::BytesMut::with_capacity(WRITE_BATCH_BYTES);
                    while sent < total {
                        while batch.len() < WRITE_BATCH_BYTES && sent < total {
                            batch.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                            batch.extend_from_slice(&payload);
                            sent += 1;
                        }
                        send.write_chunk(batch.split().freeze()).await?;
                        batch.reserve(WRITE_BATCH_BYTES);
                    }
                }
            }
            send.finish()?;
            let _ = send.stopped().await;
            connection.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            Ok(())
        })
    })?;
    let start = start_time
        .recv_timeout(Duration::from_secs(30))
        .context("raw client did not connect")?;
    let end = finished.recv_timeout(STALL).context("raw quinn stalled")?;
    join(client_thread)?;
    join(server_thread)?;
    Ok(rate(total, start, end))
}

// ---- round trips ------------------------------------------------------------

struct NumberEcho;

impl Process for NumberEcho {
    type Message = u64;
    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, number: u64) {
        let _ = ctx.send(&from, number);
    }
}

struct Pinger {
    target: Upid,
    remaining: u64,
    sent_at: Instant,
    samples: Vec<Duration>,
    done: std_mpsc::Sender<Vec<Duration>>,
}

impl Process for Pinger {
    type Message = u64;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        self.sent_at = Instant::now();
        let _ = ctx.send(&self.target, self.remaining);
    }

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, _: Upid, _: u64) {
        self.samples.push(self.sent_at.elapsed());
        self.remaining -= 1;
        if self.remaining == 0 {
            let _ = self.done.send(std::mem::take(&mut self.samples));
            return;
        }
        self.sent_at = Instant::now();
        let _ = ctx.send(&self.target, self.remaining);
    }
}

/// Warm-up round trips left out of the samples.
const WARM_UP: usize = 500;

fn round_trips_strata(ca: &CertificateAuthority, count: u64) -> anyhow::Result<Vec<Duration>> {
    let (echo, stop_echo, echo_thread) =
        node_thread("echo", ca.issue(Role::Framework, "bench-echo")?, |node| {
            Ok(node.spawn("echo", || NumberEcho, SpawnOptions::default())?)
        })?;
    let (done, finished) = std_mpsc::channel();
    let (pinger, stop_pinger, pinger_thread) = node_thread(
        "pinger",
        ca.issue(Role::Framework, "bench-pinger")?,
        move |node| {
            let total = count + WARM_UP as u64;
            Ok(node.spawn(
                "pinger",
                move || Pinger {
                    target: echo.clone(),
                    remaining: total,
                    sent_at: Instant::now(),
                    samples: Vec::with_capacity(total as usize),
                    done: done.clone(),
                },
                SpawnOptions::default(),
            )?)
        },
    )?;
    let samples = finished
        .recv_timeout(STALL)
        .context("round trips stalled")?;
    drop(pinger);
    let _ = stop_pinger.send(());
    let _ = stop_echo.send(());
    join(pinger_thread)?;
    join(echo_thread)?;
    Ok(samples.into_iter().skip(WARM_UP).collect())
}

fn round_trips_quinn(ca: &CertificateAuthority, count: u64) -> anyhow::Result<Vec<Duration>> {
    let (server, server_thread) = raw_server(ca, |mut send, mut recv| async move {
        let mut decoder = FrameDecoder::new(1 << 20);
        loop {
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => decoder.push(&chunk.bytes),
                // The client finished or closed: the run is over.
                Ok(None) | Err(_) => return Ok(()),
            }
            while let Some(frame) = decoder.next_frame()? {
                send.write_all(&raw_frame(&frame)).await?;
            }
        }
    })?;
    let ca = CertificateAuthority::from_pem(&ca.certificate_pem(), &ca.key_pem())?;
    let client_thread = on_thread("raw-pinger", move || {
        raw_runtime()?.block_on(async move {
            let (endpoint, connection) = raw_client(&ca, server).await?;
            let (mut send, mut recv) = connection.open_bi().await?;
            let mut decoder = FrameDecoder::new(1 << 20);
            let total = count as usize + WARM_UP;
            let mut samples = Vec::with_capacity(total);
            for sequence in 0..total as u64 {
                let sent_at = Instant::now();
                send.write_all(&raw_frame(&sequence.to_le_bytes())).await?;
                loop {
                    if decoder.next_frame()?.is_some() {
                        break;
                    }
                    let chunk = recv
                        .read_chunk(64 * 1024, true)
                        .await?
                        .context("echo ended")?;
                    decoder.push(&chunk.bytes);
                }
                samples.push(sent_at.elapsed());
            }
            send.finish()?;
            connection.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            Ok(samples)
        })
    })?;
    let samples = join(client_thread)?;
    join(server_thread)?;
    Ok(samples.into_iter().skip(WARM_UP).collect())
}
