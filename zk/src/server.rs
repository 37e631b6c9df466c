//! ZooKeeper servers on this machine, from the installed `zookeeper`
//! package (Debian's 3.8: `/usr/share/java/zookeeper.jar` run by Java, no
//! service manager): an ensemble on loopback ports in a directory of its
//! own, for `strata local --masters 3` and for tests. Each server is a
//! child process killed when the [`LocalEnsemble`] is dropped, or when
//! the thread that started it dies.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the package keeps its jar and its configuration directory.
const JAR: &str = "/usr/share/java/zookeeper.jar";
const CONF_DIR: &str = "/etc/zookeeper/conf";
const SETPRIV: &str = "/usr/bin/setpriv";

/// Why an ensemble could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "ZooKeeper is not installed ({JAR} or java is missing); install Debian's zookeeper package (apt-get install --no-install-recommends zookeeper)"
    )]
    NotInstalled,
    #[error("cannot set up ZooKeeper in {}: {source}", .dir.display())]
    Setup {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("ZooKeeper server {id} did not serve within {within:?}; its log: {}", .log.display())]
    NotServing {
        id: usize,
        within: Duration,
        log: PathBuf,
    },
}

/// Whether the ZooKeeper package and Java are installed.
pub fn installed() -> bool {
    Path::new(JAR).exists()
        && Command::new("java")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

/// One server of a [`LocalEnsemble`].
#[derive(Debug)]
struct Server {
    client_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// An ensemble of ZooKeeper servers on loopback.
#[derive(Debug)]
pub struct LocalEnsemble {
    servers: Vec<Server>,
}

/// A free loopback port (bound and released: a port no one listens on
/// now).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

impl LocalEnsemble {
    /// Starts `size` servers (1 is a standalone server) with their data
    /// and logs under `dir`, and waits until each serves.
    pub fn start(dir: &Path, size: usize) -> Result<LocalEnsemble, ServerError> {
        if !installed() {
            return Err(ServerError::NotInstalled);
        }
        let setup = |source| ServerError::Setup {
            dir: dir.to_owned(),
            source,
        };
        let size = size.max(1);
        let mut ports = Vec::new();
        for _ in 0..size {
            ports.push((
                free_port().map_err(setup)?,
                free_port().map_err(setup)?,
                free_port().map_err(setup)?,
            ));
        }
        let mut servers = Vec::new();
        for (index, (client_port, _, _)) in ports.iter().enumerate() {
            let id = index + 1;
            let home = dir.join(format!("server-{id}"));
            let data = home.join("data");
            std::fs::create_dir_all(&data).map_err(setup)?;
            let mut config = format!(
                "tickTime=500\ninitLimit=20\nsyncLimit=10\ndataDir={}\nclientPort={client_port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxSessionTimeout=60000\n4lw.commands.whitelist=srvr,ruok\n",
                data.display()
            );
            if size > 1 {
                for (peer, (_, quorum, election)) in ports.iter().enumerate() {
                    config.push_str(&format!(
                        "server.{}=127.0.0.1:{quorum}:{election}\n",
                        peer + 1
                    ));
                }
                std::fs::write(data.join("myid"), format!("{id}\n")).map_err(setup)?;
            }
            let path = home.join("zoo.cfg");
            std::fs::write(&path, config).map_err(setup)?;
            servers.push(Server {
                client_port: *client_port,
                config: path,
                log: home.join("server.log"),
                child: None,
            });
        }
        let mut ensemble = LocalEnsemble { servers };
        for index in 0..size {
            ensemble.start_server(index).map_err(setup)?;
        }
        ensemble.wait_serving(Duration::from_secs(60))?;
        Ok(ensemble)
    }

    /// `host:port` of each server, in order.
    pub fn servers(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|server| format!("127.0.0.1:{}", server.client_port))
            .collect()
    }

    /// The `zk://` address of `path` in this ensemble.
    pub fn url(&self, path: &str) -> String {
        format!("zk://{}{}", self.servers().join(","), path)
    }

    /// Starts server `index` (again).
    pub fn start_server(&mut self, index: usize) -> std::io::Result<()> {
        let Some(server) = self.servers.get_mut(index) else {
            return Ok(());
        };
        if server.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&server.log)?;
        // The server dies with whoever started it, even by SIGKILL (where
        // util-linux's setpriv can ask the kernel for that).
        let mut command = if Path::new(SETPRIV).exists() {
            let mut command = Command::new(SETPRIV);
            command.args(["--pdeathsig", "KILL", "java"]);
            command
        } else {
            Command::new("java")
        };
        let child = command
            .args([
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-Dzookeeper.jmx.log4j.disable=true",
            ])
            .arg("-cp")
            .arg(format!("{CONF_DIR}:{JAR}"))
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&server.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        server.child = Some(child);
        Ok(())
    }

    /// Kills server `index` (SIGKILL) and waits for it.
    pub fn kill_server(&mut self, index: usize) {
        if let Some(mut child) = self.servers.get_mut(index).and_then(|s| s.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every running server answers as part of a quorum (or
    /// standalone).
    pub fn wait_serving(&self, within: Duration) -> Result<(), ServerError> {
        let deadline = Instant::now() + within;
        for (index, server) in self.servers.iter().enumerate() {
            if server.child.is_none() {
                continue;
            }
            while !serving(server.client_port) {
                if Instant::now() >= deadline {
                    return Err(ServerError::NotServing {
                        id: index + 1,
                        within,
                        log: server.log.clone(),
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

/// Whether the server on `port` serves clients (its `srvr` answer names
/// its mode; a server without a quorum answers that it does not serve).
pub fn serving(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"srvr").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.take(64 * 1024).read_to_string(&mut answer);
    answer.contains("Mode: ")
}

impl Drop for LocalEnsemble {
    fn drop(&mut self) {
        for index in 0..self.servers.len() {
            self.kill_server(index);
        }
    }
}
