//! Nodes, sends, links, timers, supervision and bounds, in one OS process
//! (several nodes talking over real QUIC on 127.0.0.1).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Command, DEADLINE, Echo, Probe, node, paused_system, system};
use strata_runtime::{
    CertificateAuthority, Failure, Incarnation, Process, ProcessContext, Received, RestartPolicy,
    SendError, SpawnOptions, Upid,
};

#[test]
fn local_send_reaches_the_process_and_the_reply_comes_back() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let node = node(&ca, "solo").await;
        let echo = node
            .spawn("echo", || Echo, SpawnOptions::default())
            .unwrap();
        let mut inbox = node.inbox::<String>("client", 16).unwrap();
        inbox.send(&echo, "hi".to_string()).unwrap();
        let (from, text) = inbox.message_within(DEADLINE).await.unwrap();
        assert_eq!((from, text.as_str()), (echo, "hi"));
        let metrics = node.metrics();
        assert_eq!(metrics.messages_sent_local, 2);
        assert_eq!(metrics.messages_sent_remote, 0);
    });
}

#[test]
fn remote_send_between_nodes_carries_the_sender_identity() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let master = node(&ca, "master").await;
        let agent = node(&ca, "agent-1").await;
        let probe = master
            .spawn("probe", Probe::default, SpawnOptions::default())
            .unwrap();
        let mut inbox = agent.inbox::<String>("asker", 16).unwrap();
        inbox.send(&probe, Command::WhoAmI).unwrap();
        let (from, name) = inbox.message_within(DEADLINE).await.unwrap();
        assert_eq!(from, probe);
        assert_eq!(name, "agent-1");
        assert_eq!(master.metrics().messages_received_remote, 1);
        assert_eq!(agent.metrics().messages_received_remote, 1);
        // The master adopted the agent's connection: one connection only.
        assert_eq!(agent.metrics().connections_opened, 1);
        assert_eq!(master.metrics().connections_opened, 0);
    });
}

#[test]
fn ten_thousand_remote_messages_arrive_in_order() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let a = node(&ca, "a").await;
        let b = node(&ca, "b").await;
        ten_thousand_in_order(&a, &b).await;
    });
}

/// Sends 10,000 numbers from `a` to `b` and checks they arrive in order.
async fn ten_thousand_in_order(a: &strata_runtime::Node, b: &strata_runtime::Node) {
    let mut sink = b.inbox::<u64>("sink", 20_000).unwrap();
    let sender = a.pid("sender").unwrap();
    for sequence in 0..10_000u64 {
        a.send(&sender, sink.pid(), sequence).unwrap();
    }
    for expected in 0..10_000u64 {
        let (_, sequence) = sink.message_within(DEADLINE).await.unwrap();
        assert_eq!(sequence, expected);
    }
}

#[test]
fn messages_to_unknown_processes_are_dropped_and_counted() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let a = node(&ca, "a").await;
        let b = node(&ca, "b").await;
        let from = a.pid("ghost-sender").unwrap();
        let local_nobody = a.pid("nobody").unwrap();
        assert_eq!(
            a.send(&from, &local_nobody, 1u64),
            Err(SendError::UnknownProcess(local_nobody.clone()))
        );
        assert_eq!(a.metrics().dropped_unknown_process, 1);
        // Remotely the sender learns nothing; the receiver counts it and
        // keeps serving.
        a.send(&from, &b.pid("nobody").unwrap(), 1u64).unwrap();
        let echo = b.spawn("echo", || Echo, SpawnOptions::default()).unwrap();
        let mut inbox = a.inbox::<String>("client", 4).unwrap();
        inbox.send(&echo, "still here".to_string()).unwrap();
        assert!(inbox.message_within(DEADLINE).await.is_some());
        assert_eq!(b.metrics().dropped_unknown_process, 1);
    });
}

#[test]
fn messages_for_an_earlier_incarnation_are_dropped() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let node = node(&ca, "n").await;
        let echo = node
            .spawn("echo", || Echo, SpawnOptions::default())
            .unwrap();
        let stale = echo.with_incarnation(Incarnation(node.incarnation().0 ^ 1));
        let from = node.pid("client").unwrap();
        assert_eq!(
            node.send(&from, &stale, "old".to_string()),
            Err(SendError::StaleIncarnation(stale.clone()))
        );
        assert_eq!(node.metrics().dropped_stale_incarnation, 1);
        // A typed address (any incarnation) still reaches it.
        let typed: Upid = echo.to_string().parse().unwrap();
        assert_eq!(typed.incarnation(), Incarnation::ANY);
        node.send(&from, &typed, "new".to_string()).unwrap();
    });
}

#[test]
fn a_message_of_the_wrong_type_is_refused() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let node = node(&ca, "n").await;
        let echo = node
            .spawn("echo", || Echo, SpawnOptions::default())
            .unwrap();
        let from = node.pid("client").unwrap();
        let result = node.send(&from, &echo, 7u64);
        assert!(
            matches!(result, Err(SendError::WrongType { .. })),
            "{result:?}"
        );
        assert_eq!(node.metrics().dropped_wrong_type, 1);
    });
}

#[test]
fn a_panicking_process_is_restarted_under_the_same_id_and_keeps_receiving() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let node = node(&ca, "n").await;
        let probe = node
            .spawn("probe", Probe::default, SpawnOptions::default())
            .unwrap();
        let mut inbox = node.inbox::<u64>("client", 16).unwrap();
        inbox.send(&probe, Command::Ping).unwrap();
        inbox.send(&probe, Command::Ping).unwrap();
        assert_eq!(inbox.message_within(DEADLINE).await.unwrap().1, 1);
        assert_eq!(inbox.message_within(DEADLINE).await.unwrap().1, 2);
        inbox.send(&probe, Command::Panic).unwrap();
        // Queued behind the panic: held during the backoff, then handled
        // by the fresh instance, whose count starts again.
        inbox.send(&probe, Command::Ping).unwrap();
        assert_eq!(
            inbox.message_within(DEADLINE).await.unwrap(),
            (probe.clone(), 1)
        );
        assert!(node.is_running("probe"));
        assert_eq!(node.metrics().restarts, 1);
        // A failure requested through the context is handled the same way.
        inbox.send(&probe, Command::Fail).unwrap();
        inbox.send(&probe, Command::Ping).unwrap();
        assert_eq!(
            inbox.message_within(DEADLINE).await.unwrap(),
            (probe.clone(), 1)
        );
        assert_eq!(node.metrics().restarts, 2);
    });
}

/// The trap the supervisor exists for: actix's own `Supervisor` restarts
/// an actor that stopped, but a panic in a handler kills the actor for
/// good and its address reports it closed.
#[test]
fn actix_alone_does_not_restart_a_panicked_actor() {
    use actix::{Actor, Handler, Supervised, Supervisor};

    struct Fragile;
    impl Actor for Fragile {
        type Context = actix::Context<Self>;
    }
    impl Supervised for Fragile {}
    struct Boom;
    impl actix::Message for Boom {
        type Result = ();
    }
    impl Handler<Boom> for Fragile {
        type Result = ();
        fn handle(&mut self, _: Boom, _: &mut Self::Context) {
            panic!("fragile actor panics");
        }
    }

    system(async {
        let address = Supervisor::start(|_| Fragile);
        let first = address.send(Boom).await;
        assert!(first.is_err(), "the panic drops the reply");
        let second = address.send(Boom).await;
        assert!(
            matches!(second, Err(actix::MailboxError::Closed)),
            "{second:?}"
        );
    });
}

/// Reports what its supervised child does.
struct Parent {
    report_to: Upid,
    child_policy: RestartPolicy,
}

/// Panics whenever it starts.
struct Doomed;

impl Process for Doomed {
    type Message = u64;

    fn started(&mut self, _ctx: &mut ProcessContext<'_, Self>) {
        panic!("doomed at start");
    }

    fn handle(&mut self, _: &mut ProcessContext<'_, Self>, _: Upid, _: u64) {}
}

impl Process for Parent {
    type Message = u64;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        ctx.spawn_child(
            "doomed",
            || Doomed,
            SpawnOptions::default().restart(self.child_policy.clone()),
        )
        .unwrap();
    }

    fn handle(&mut self, _: &mut ProcessContext<'_, Self>, _: Upid, _: u64) {}

    fn child_gave_up(&mut self, ctx: &mut ProcessContext<'_, Self>, child: Upid, failure: Failure) {
        let _ = ctx.send(&self.report_to, format!("{} {failure}", child.id()));
    }
}

#[test]
fn exceeding_the_restart_intensity_is_reported_to_the_parent() {
    paused_system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let node = node(&ca, "n").await;
        let mut inbox = node.inbox::<String>("observer", 16).unwrap();
        let report_to = inbox.pid().clone();
        let policy = RestartPolicy {
            max_restarts: 3,
            within: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        node.spawn(
            "parent",
            move || Parent {
                report_to: report_to.clone(),
                child_policy: policy.clone(),
            },
            SpawnOptions::default(),
        )
        .unwrap();
        let (_, report) = inbox.message_within(Duration::from_secs(60)).await.unwrap();
        assert_eq!(report, "doomed panicked: doomed at start");
        let metrics = node.metrics();
        assert_eq!(metrics.restarts, 3);
        assert_eq!(metrics.restarts_exhausted, 1);
        assert!(!node.is_running("doomed"));
        assert_eq!(node.failures().len(), 1);
    });
}

/// Counts ticks and reports the count when told.
struct Ticker {
    ticks: u64,
    closure_ticks: u64,
    report_to: Upid,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Tick {
    Tick,
    Report,
}

impl strata_runtime::Message for Tick {}

impl Process for Ticker {
    type Message = Tick;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        ctx.send_every(Duration::from_secs(1), || Tick::Tick);
        let cancelled = ctx.send_later(Duration::from_secs(3), Tick::Report);
        assert!(ctx.cancel_timer(cancelled));
        // Closures on the process: every 2 s, and once at 10.5 s.
        ctx.run_every(Duration::from_secs(2), |ticker, _| {
            ticker.closure_ticks += 1
        });
        ctx.run_later(Duration::from_millis(10_500), |ticker, ctx| {
            let report_to = ticker.report_to.clone();
            let _ = ctx.send(&report_to, ticker.ticks * 100 + ticker.closure_ticks);
        });
    }

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, _: Upid, tick: Tick) {
        match tick {
            Tick::Tick => self.ticks += 1,
            Tick::Report => {
                let _ = ctx.send(&self.report_to, self.ticks);
            }
        }
    }
}

#[test]
fn timers_follow_the_paused_clock() {
    paused_system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let node = node(&ca, "n").await;
        let mut inbox = node.inbox::<u64>("observer", 16).unwrap();
        let report_to = inbox.pid().clone();
        let started = tokio::time::Instant::now();
        node.spawn(
            "ticker",
            move || Ticker {
                ticks: 0,
                closure_ticks: 0,
                report_to: report_to.clone(),
            },
            SpawnOptions::default(),
        )
        .unwrap();
        let (_, ticks) = inbox.message_within(Duration::from_secs(60)).await.unwrap();
        // 10 message ticks (every 1 s) and 5 closure ticks (every 2 s).
        assert_eq!(ticks, 1005);
        // Ten and a half virtual seconds passed, however long the test took.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(10_500) && elapsed < Duration::from_secs(11),
            "{elapsed:?}"
        );
    });
}

#[test]
fn a_full_local_mailbox_refuses_at_once_and_counts() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let node = node(&ca, "n").await;
        let probe = node
            .spawn(
                "probe",
                Probe::default,
                SpawnOptions::default().mailbox_capacity(8),
            )
            .unwrap();
        let mut inbox = node.inbox::<u64>("client", 1000).unwrap();
        // The probe cannot run while this loop holds the thread, so its
        // mailbox fills.
        let results: Vec<_> = (0..100)
            .map(|_| inbox.send(&probe, Command::Ping))
            .collect();
        let accepted = results.iter().filter(|result| result.is_ok()).count();
        let refused = results
            .iter()
            .filter(|result| matches!(result, Err(SendError::MailboxFull(_))))
            .count();
        assert_eq!(accepted + refused, 100);
        assert!((8..=10).contains(&accepted), "accepted {accepted}");
        assert_eq!(node.metrics().dropped_mailbox_full, refused as u64);
        // Everything accepted is delivered, in order.
        for expected in 1..=accepted as u64 {
            assert_eq!(inbox.message_within(DEADLINE).await.unwrap().1, expected);
        }
    });
}

/// A node with its QUIC settings changed by `set`, and a process id at a
/// UDP socket that never answers (kept open while the socket is held):
/// the handshake hangs until the connect timeout (500 ms) while sends
/// pile up in the queue.
async fn node_and_silent_peer(
    set: impl FnOnce(&mut strata_runtime::transport::quic::QuicConfig),
) -> (strata_runtime::Node, Upid, std::net::UdpSocket) {
    let ca = CertificateAuthority::generate("test").unwrap();
    let mut config = common::config(&ca, "n");
    config.quic.connect_timeout = Duration::from_millis(500);
    set(&mut config.quic);
    let node = strata_runtime::Node::bind(config).await.unwrap();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target: Upid = format!("nobody@{}", silent.local_addr().unwrap())
        .parse()
        .unwrap();
    (node, target, silent)
}

#[test]
fn a_full_send_queue_refuses_and_a_dead_peer_drops_what_was_queued() {
    system(async {
        let (node, target, _silent) =
            node_and_silent_peer(|quic| quic.send_queue_frames = 16).await;
        let mut inbox = node.inbox::<u64>("client", 4).unwrap();
        inbox.link(&target);
        let results: Vec<_> = (0..20u64).map(|n| inbox.send(&target, n)).collect();
        assert!(results[..16].iter().all(Result::is_ok), "{results:?}");
        assert!(
            results[16..]
                .iter()
                .all(|result| matches!(result, Err(SendError::QueueFull(_)))),
            "{results:?}"
        );
        // The link reports the unreachable node.
        assert_eq!(
            inbox.recv_within(DEADLINE).await,
            Some(Received::Exited(target.clone()))
        );
        let metrics = node.metrics();
        assert_eq!(metrics.dropped_send_queue_full, 4);
        assert_eq!(metrics.dropped_unreachable, 16);
        // The next send tries again with a fresh connection attempt.
        assert!(inbox.send(&target, 99).is_ok());
    });
}

/// A slow peer's queue is bounded by bytes, each frame counted with what
/// holding it costs: many small frames fill it as their bytes and their
/// handles would, not as their bytes alone.
#[test]
fn a_send_queue_counts_what_each_frame_costs() {
    system(async {
        let (node, target, _silent) = node_and_silent_peer(|quic| {
            quic.send_queue_bytes = 100 * strata_runtime::transport::quic::QUEUED_FRAME_COST_BYTES;
        })
        .await;
        let inbox = node.inbox::<u64>("client", 4).unwrap();
        let accepted = (0..200u64)
            .map(|n| inbox.send(&target, n))
            .take_while(Result::is_ok)
            .count();
        // Frames of about 20 bytes: 76 of them with their cost, all 200
        // by their bytes alone.
        assert!((60..=95).contains(&accepted), "accepted {accepted}");
        assert_eq!(node.metrics().dropped_send_queue_full, 1);
    });
}

/// A send queue whose bytes cannot hold one frame's cost would refuse
/// every send: such a configuration is refused when the node binds.
#[test]
fn a_send_queue_too_small_for_one_frame_is_refused() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let mut config = common::config(&ca, "n");
        config.quic.send_queue_bytes = strata_runtime::transport::quic::QUEUED_FRAME_COST_BYTES;
        let refused = strata_runtime::Node::bind(config).await.err().unwrap();
        assert!(refused.to_string().contains("send queue"), "{refused}");
    });
}

#[test]
fn links_report_a_local_process_that_stops() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let node = node(&ca, "n").await;
        let echo = node
            .spawn("echo", || Echo, SpawnOptions::default())
            .unwrap();
        let mut inbox = node.inbox::<String>("watcher", 4).unwrap();
        inbox.link(&echo);
        node.stop(&echo);
        assert_eq!(
            inbox.recv_within(DEADLINE).await,
            Some(Received::Exited(echo.clone()))
        );
        // Linking to a process that is not running reports at once.
        inbox.link(&echo);
        assert_eq!(
            inbox.recv_within(DEADLINE).await,
            Some(Received::Exited(echo))
        );
    });
}

#[test]
fn links_report_a_peer_node_that_shuts_down() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let a = node(&ca, "a").await;
        let b = node(&ca, "b").await;
        let echo = b.spawn("echo", || Echo, SpawnOptions::default()).unwrap();
        let mut inbox = a.inbox::<String>("watcher", 4).unwrap();
        inbox.link(&echo);
        inbox.send(&echo, "ping".to_string()).unwrap();
        assert!(matches!(
            inbox.recv_within(DEADLINE).await,
            Some(Received::Message(..))
        ));
        b.shutdown();
        assert_eq!(
            inbox.recv_within(DEADLINE).await,
            Some(Received::Exited(echo))
        );
    });
}

/// Nodes whose QUIC runs on a thread of its own (as the daemons' do)
/// exchange messages in order with a node whose QUIC does not, links
/// still report a peer that goes, and a node dropped without a shutdown
/// stops its QUIC thread.
#[test]
fn quic_on_a_thread_of_its_own_carries_messages_and_links() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let own = |name: &str| {
            let mut config = common::config(&ca, name);
            config.quic.own_thread = true;
            strata_runtime::Node::bind(config)
        };
        let threads_before = quic_threads();
        let a = own("a").await.unwrap();
        let b = own("b").await.unwrap();
        let c = node(&ca, "c").await;
        // Named by the threads themselves once they run.
        let deadline = std::time::Instant::now() + DEADLINE;
        while quic_threads() < threads_before + 2 {
            assert!(std::time::Instant::now() < deadline, "no QUIC threads");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ten_thousand_in_order(&a, &b).await;
        // QUIC goes on while the processes' thread is busy: a message
        // sent with this thread blocked from then on (outside a process's
        // callback, so QUIC's thread is woken at once) reaches `b`'s QUIC.
        let received = b.metrics().bytes_received;
        let sink = b.pid("anyone").unwrap();
        a.send(&a.pid("sender").unwrap(), &sink, 1u64).unwrap();
        let deadline = std::time::Instant::now() + DEADLINE;
        while b.metrics().bytes_received == received {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing crossed while the processes' thread was blocked"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Between the two kinds of node, both ways.
        let echo = b.spawn("echo", || Echo, SpawnOptions::default()).unwrap();
        let mut watcher = c.inbox::<String>("watcher", 4).unwrap();
        watcher.link(&echo);
        watcher.send(&echo, "ping".to_string()).unwrap();
        let (from, text) = watcher.message_within(DEADLINE).await.unwrap();
        assert_eq!((from, text.as_str()), (echo.clone(), "ping"));
        b.shutdown();
        assert_eq!(
            watcher.recv_within(DEADLINE).await,
            Some(Received::Exited(echo))
        );
        drop(b);
        drop(a);
        let deadline = std::time::Instant::now() + DEADLINE;
        while quic_threads() > threads_before {
            assert!(
                std::time::Instant::now() < deadline,
                "QUIC's threads still run after their nodes went"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// Threads of this process named `quic`.
fn quic_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "quic")
        .count()
}

#[test]
fn a_spawned_id_cannot_be_taken_twice() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let node = node(&ca, "n").await;
        let echo = node
            .spawn("echo", || Echo, SpawnOptions::default())
            .unwrap();
        let again = node.spawn("echo", || Echo, SpawnOptions::default());
        assert_eq!(again, Err(strata_runtime::SpawnError::AlreadyRunning(echo)));
        assert!(
            node.spawn("bad id", || Echo, SpawnOptions::default())
                .is_err()
        );
    });
}

#[test]
fn oversized_messages_are_refused_by_the_sender() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let a = node(&ca, "a").await;
        let b = node(&ca, "b").await;
        let from = a.pid("client").unwrap();
        let to = b.pid("anyone").unwrap();
        let result = a.send(&from, &to, vec![0u8; 5 << 20]);
        assert!(matches!(result, Err(SendError::TooLarge(_))), "{result:?}");
        assert_eq!(a.metrics().dropped_too_large, 1);
    });
}

/// Counts numbers and reports once it has seen `total`.
struct Counter {
    seen: u64,
    total: u64,
    report_to: Upid,
}

impl Process for Counter {
    type Message = u64;

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, _: Upid, _: u64) {
        self.seen += 1;
        if self.seen == self.total {
            let report_to = self.report_to.clone();
            let _ = ctx.send(&report_to, self.seen);
        }
    }
}

#[test]
fn a_remote_burst_waits_for_room_in_a_small_mailbox_instead_of_dropping() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let a = node(&ca, "a").await;
        let b = node(&ca, "b").await;
        let mut report = b.inbox::<u64>("report", 4).unwrap();
        let report_to = report.pid().clone();
        let counter = b
            .spawn(
                "counter",
                move || Counter {
                    seen: 0,
                    total: 2000,
                    report_to: report_to.clone(),
                },
                SpawnOptions::default().mailbox_capacity(4),
            )
            .unwrap();
        let from = a.pid("burst").unwrap();
        for n in 0..2000u64 {
            a.send(&from, &counter, n).unwrap();
        }
        assert_eq!(
            report.message_within(DEADLINE).await.map(|(_, n)| n),
            Some(2000)
        );
        let metrics = b.metrics();
        assert_eq!(metrics.dropped_mailbox_full, 0);
        assert_eq!(metrics.messages_received_remote, 2000);
    });
}

#[test]
fn sends_from_other_threads_work_and_spawning_there_is_refused() {
    system(async {
        let ca = CertificateAuthority::generate("test").unwrap();
        let a = node(&ca, "a").await;
        let b = node(&ca, "b").await;
        let echo = b.spawn("echo", || Echo, SpawnOptions::default()).unwrap();
        let mut inbox = a.inbox::<String>("client", 4).unwrap();
        let (node, from, to) = (a.clone(), inbox.pid().clone(), echo.clone());
        // A plain thread with no runtime: the send still starts the
        // connection on the node's own runtime.
        let outcome = std::thread::spawn(move || {
            let sent = node.send(&from, &to, "from afar".to_string());
            let spawned = node.spawn("elsewhere", || Echo, SpawnOptions::default());
            (sent, spawned)
        })
        .join()
        .unwrap();
        assert_eq!(outcome.0, Ok(()));
        assert_eq!(outcome.1, Err(strata_runtime::SpawnError::OutsideSystem));
        let reply = inbox.message_within(DEADLINE).await;
        assert_eq!(reply.map(|(_, text)| text).as_deref(), Some("from afar"));
    });
}

/// A process whose `started` sets up a timer, as the master's does.
struct Ticking(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Process for Ticking {
    type Message = Command;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        ctx.run_every(Duration::from_secs(1), |_, _| {});
    }

    fn handle(&mut self, _: &mut ProcessContext<'_, Self>, _: Upid, _: Command) {}
}

/// A command that fails after spawning its processes drops its runtime
/// with them not yet started: they never start (their timers would have
/// no reactor), and nothing panics on the way out.
#[test]
fn processes_spawned_as_the_runtime_ends_never_start() {
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = started.clone();
    let system = actix_rt::System::new();
    let failed: Result<(), &str> = system.block_on(async move {
        let ca = CertificateAuthority::generate("test").unwrap();
        let node = node(&ca, "failing").await;
        node.spawn(
            "ticking",
            move || Ticking(flag.clone()),
            SpawnOptions::default(),
        )
        .unwrap();
        Err("the command failed before its processes ran")
    });
    assert!(failed.is_err());
    drop(system);
    assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
}
