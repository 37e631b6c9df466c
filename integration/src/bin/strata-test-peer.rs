//! A node in its own OS process for multi-process tests: it hosts an
//! `echo` process that returns every number it receives to its sender,
//! prints `ready <echo address>` on stdout and runs until killed.
//!
//! Usage: `strata-test-peer TLS_DIR [PORT]` (a free port when absent).

use std::path::PathBuf;

use anyhow::Context;
use strata_runtime::{Node, NodeConfig, SpawnOptions, TlsMaterial};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let tls_dir: PathBuf = args
        .next()
        .context("usage: strata-test-peer TLS_DIR [PORT]")?
        .into();
    let port: u16 = match args.next() {
        Some(port) => port.parse().context("PORT must be a number")?,
        None => 0,
    };
    actix_rt::System::new().block_on(async move {
        let tls = TlsMaterial::development(&tls_dir, strata_runtime::Role::Framework, "test-peer")?;
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let node = Node::bind(NodeConfig::new(listen, tls)).await?;
        let echo = node.spawn(
            "echo",
            || strata_integration::NumberEcho,
            SpawnOptions::default(),
        )?;
        println!("ready {echo}");
        std::future::pending::<()>().await;
        Ok(())
    })
}
