//! Two nodes in one process, talking over QUIC with mutual TLS on
//! loopback: a `pinger` process sends numbers to a `ponger` process on the
//! other node, which answers each; the pinger prints every round trip and
//! tells the program's inbox when it is done.
//!
//! Run: `cargo run --release -p strata-examples --bin ping-pong [COUNT]`

use std::time::{Duration, Instant};

use anyhow::Context;
use strata_runtime::{Node, NodeConfig, Process, ProcessContext, SpawnOptions, TlsMaterial, Upid};

/// Answers every number with the same number.
struct Ponger;

impl Process for Ponger {
    type Message = u64;

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, number: u64) {
        // A send fails only if the message cannot even be queued; the
        // pinger would notice the missing answer.
        let _ = ctx.send(&from, number);
    }
}

/// Sends `count` numbers one at a time and times each answer.
struct Pinger {
    ponger: Upid,
    report_to: Upid,
    count: u64,
    next: u64,
    sent_at: Instant,
}

impl Process for Pinger {
    type Message = u64;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        self.sent_at = Instant::now();
        let ponger = self.ponger.clone();
        if let Err(error) = ctx.send(&ponger, self.next) {
            eprintln!("cannot send: {error}");
        }
    }

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, number: u64) {
        let round_trip = self.sent_at.elapsed();
        println!(
            "{number} from {from} ({}) in {:.0} µs",
            ctx.sender_identity(),
            round_trip.as_secs_f64() * 1e6
        );
        self.next += 1;
        if self.next == self.count {
            let report_to = self.report_to.clone();
            let _ = ctx.send(&report_to, self.count);
            return;
        }
        self.sent_at = Instant::now();
        let ponger = self.ponger.clone();
        let _ = ctx.send(&ponger, self.next);
    }
}

fn main() -> anyhow::Result<()> {
    let count: u64 = match std::env::args().nth(1) {
        Some(text) => text.parse().context("COUNT must be a whole number")?,
        None => 5,
    };
    let tls_dir = std::env::temp_dir().join("strata-example-ping-pong");
    actix_rt::System::new().block_on(async move {
        let listen = "127.0.0.1:0".parse()?;
        let left = Node::bind(NodeConfig::new(
            listen,
            TlsMaterial::development(&tls_dir, strata_runtime::Role::Framework, "left")?,
        ))
        .await?;
        let right = Node::bind(NodeConfig::new(
            listen,
            TlsMaterial::development(&tls_dir, strata_runtime::Role::Framework, "right")?,
        ))
        .await?;
        let ponger = right.spawn("ponger", || Ponger, SpawnOptions::default())?;
        // An inbox is a process read from plain async code.
        let mut done = left.inbox::<u64>("main", 1)?;
        let report_to = done.pid().clone();
        left.spawn(
            "pinger",
            move || Pinger {
                ponger: ponger.clone(),
                report_to: report_to.clone(),
                count,
                next: 0,
                sent_at: Instant::now(),
            },
            SpawnOptions::default(),
        )?;
        // A lost answer would leave the pinger waiting: bound the run.
        match done.message_within(Duration::from_secs(30)).await {
            Some((_, rounds)) => {
                println!("{rounds} round trips done");
                Ok(())
            }
            None => anyhow::bail!("no answer within 30 seconds"),
        }
    })
}
