//! Shared fixtures for the runtime's tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_runtime::{
    CertificateAuthority, Message, Node, NodeConfig, Process, ProcessContext, Upid,
};

/// How long a test waits for something that should happen promptly.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `test` inside a fresh actix system on real time.
pub fn system<F: Future>(test: F) -> F::Output {
    actix_rt::System::new().block_on(test)
}

/// Runs `test` inside an actix system whose clock is paused: time only
/// moves when every task is idle, jumping to the next timer.
pub fn paused_system<F: Future>(test: F) -> F::Output {
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    })
    .block_on(test)
}

/// A node on 127.0.0.1 with a free port and quick failure detection.
pub async fn node(ca: &CertificateAuthority, name: &str) -> Node {
    Node::bind(config(ca, name)).await.unwrap()
}

pub fn config(ca: &CertificateAuthority, name: &str) -> NodeConfig {
    let mut config = NodeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ca.issue(strata_runtime::Role::Framework, name).unwrap(),
    );
    config.quic.idle_timeout = Duration::from_secs(2);
    config.quic.keep_alive_interval = Duration::from_millis(500);
    config.quic.connect_timeout = Duration::from_secs(2);
    config
}

/// Replies to every text with the same text.
pub struct Echo;

impl Process for Echo {
    type Message = String;

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, text: String) {
        let _ = ctx.send(&from, text);
    }
}

/// What the probe process understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Reply with how many pings this instance has seen.
    Ping,
    /// Panic inside the handler.
    Panic,
    /// Fail through the context.
    Fail,
    /// Reply with the sender's certificate name.
    WhoAmI,
}

impl Message for Command {}

/// Counts pings; forgets the count when restarted, so a reply of 1 after
/// a failure shows a fresh instance.
#[derive(Default)]
pub struct Probe {
    pings: u64,
}

impl Process for Probe {
    type Message = Command;

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, command: Command) {
        match command {
            Command::Ping => {
                self.pings += 1;
                let _ = ctx.send(&from, self.pings);
            }
            Command::Panic => panic!("probe asked to panic"),
            Command::Fail => ctx.fail("probe asked to fail"),
            Command::WhoAmI => {
                let name = ctx.sender_identity().name.clone();
                let _ = ctx.send(&from, name);
            }
        }
    }
}
