//! `strata tls`: certificates for production clusters.
//!
//! Development needs none of this (nodes share a CA generated in the work
//! directory). A production cluster keeps its CA key off the nodes: make
//! the CA once, issue each node its own directory, and start the node
//! with `--tls-dir` pointing at it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use strata_runtime::tls::{CA_FILE, CA_KEY_FILE};
use strata_runtime::{CertificateAuthority, Role};

#[derive(Debug, clap::Subcommand)]
pub enum TlsCommand {
    /// Create a cluster CA: ca.pem and ca-key.pem (mode 0600) in DIR.
    Ca {
        /// Where to write the CA; must not already hold one.
        #[arg(long, env = "STRATA_CA_DIR")]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Strata cluster CA")]
        name: String,
    },
    /// Issue a node certificate: ca.pem, node.pem and node-key.pem in OUT,
    /// ready for `--tls-dir`.
    Cert {
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long, env = "STRATA_CA_DIR")]
        ca_dir: PathBuf,
        /// What the node is: master, agent, framework, executor or
        /// operator. Peers let it act only as that role (an agent
        /// certificate can never speak as the master).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The node's name, its identity to peers (its certificate's
        /// common name): an agent's name, a framework's principal, an
        /// operator's user.
        #[arg(long)]
        name: String,
        /// An IP address or DNS name that HTTPS clients reach the node
        /// by, so they can verify it (repeat for several); masters and
        /// agents serve HTTPS on their port.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// How many days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=3650))]
        days: u64,
        /// Where to write the node's files.
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

pub fn run(command: TlsCommand) -> anyhow::Result<()> {
    match command {
        TlsCommand::Ca { dir, name } => {
            if dir.join(CA_FILE).exists() || dir.join(CA_KEY_FILE).exists() {
                bail!(
                    "{} already holds a CA; remove it first if you mean to replace it (every node certificate it issued stops being trusted)",
                    dir.display()
                );
            }
            let ca = CertificateAuthority::generate(&name)?;
            ca.save(&dir)?;
            println!("created CA {name:?} in {}", dir.display());
            println!(
                "keep {} secret; issue node certificates with `strata tls cert`",
                dir.join(CA_KEY_FILE).display()
            );
        }
        TlsCommand::Cert {
            ca_dir,
            role,
            name,
            hosts,
            days,
            out,
        } => {
            let ca = CertificateAuthority::load(&ca_dir)
                .with_context(|| format!("cannot read the CA in {}", ca_dir.display()))?;
            let material = ca.issue_serving(
                role,
                &name,
                std::time::Duration::from_secs(days * 24 * 3600),
                &hosts,
            )?;
            material.save(&out)?;
            println!(
                "issued {role} {name:?}, valid {days} days, into {}; start the node with --tls-dir {}",
                out.display(),
                out.display()
            );
        }
    }
    Ok(())
}
