//! The image suite: how long a task in a cached image takes from ACCEPT
//! to TASK_RUNNING, against a plain command task, in the same run on the
//! same agent (cgroups and namespaces isolation, the task launcher).
//!
//! Tasks go one at a time, alternating, so each latency is one task's
//! own: the plain task's is a sandbox, a cgroup and the container init;
//! the image task's adds the cached image's lookup, an overlay mount, the
//! bundle's config.json, and runc creating the container.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata_agent::Runner;
use strata_protocol::{
    CommandInfo, ContainerInfo, Filters, Operation, Resources, TaskId, TaskInfo, TaskKind,
    TaskState, ToMaster, ToScheduler,
};
use strata_runtime::{CertificateAuthority, Received};

use crate::launch::{Cluster, Isolating, agent_config, sandbox_root};
use crate::report::{Better, Measure, Row, Target};

pub fn run(scale: f64) -> anyhow::Result<Vec<Row>> {
    let each = ((40.0 * scale) as usize).max(10);
    if !rustix::process::geteuid().is_root() {
        bail!("the image suite needs root (cgroups, mounts, runc)");
    }
    if !Path::new("/bin/busybox").is_file() {
        bail!("the image suite builds its image from /bin/busybox: install busybox-static");
    }
    strata_agent::oci::OciRuntime::find(None, Path::new("/")).map_err(anyhow::Error::msg)?;
    let launcher = crate::recovery::strata_binary()?;
    let work_dir = sandbox_root()
        .0
        .join(format!("strata-bench-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir)?;
    let layout = work_dir.join("layout");
    build_image(&layout)?;
    let isolation = Isolating::Namespaces.isolation(&work_dir, Some(&launcher))?;
    let ca = CertificateAuthority::generate("strata-bench")?;
    let measured = actix_rt::System::new().block_on(alternate(
        &ca,
        &work_dir,
        &launcher,
        isolation.clone(),
        layout.to_str().context("a path that is not UTF-8")?,
        each,
    ));
    if let strata_agent::isolation::Isolation::Cgroups(cgroups) = &isolation {
        let _ = cgroups.layout.remove_root();
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    let (mut plain, mut imaged) = measured?;
    let measure = Measure {
        unit: "ms",
        baseline_name: "a plain command task (same agent, same isolation)",
        better: Better::Lower,
        target: Target::None,
    };
    Ok(vec![
        Row::new(
            format!("accept to TASK_RUNNING of a task in a cached image, p50 of {each}"),
            measure,
            percentile(&mut plain, 0.5),
            percentile(&mut imaged, 0.5),
        ),
        Row::new(
            format!("accept to TASK_RUNNING of a task in a cached image, p99 of {each}"),
            measure,
            percentile(&mut plain, 0.99),
            percentile(&mut imaged, 0.99),
        ),
    ])
}

fn percentile(samples: &mut [f64], at: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() as f64 * at).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[index]
}

/// Writes an OCI image layout of one layer: busybox and the applets the
/// tasks run.
fn build_image(layout: &Path) -> anyhow::Result<()> {
    let mut tar = tar::Builder::new(Vec::new());
    let busybox = std::fs::read("/bin/busybox")?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(busybox.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "bin/busybox", &busybox[..])?;
    for applet in ["sh", "true"] {
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        link.set_uid(0);
        link.set_gid(0);
        link.set_mtime(0);
        tar.append_link(&mut link, format!("bin/{applet}"), "busybox")?;
    }
    let layer = tar.into_inner()?;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gzip, &layer)?;
    let blob = gzip.finish()?;
    let sha = |bytes: &[u8]| strata_agent::images::layer::sha256(bytes);
    let put = |bytes: &[u8]| -> anyhow::Result<String> {
        let digest = sha(bytes);
        let dir = layout.join("blobs/sha256");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(digest.trim_start_matches("sha256:")), bytes)?;
        Ok(digest)
    };
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": architecture, "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]},
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config.as_bytes())?, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": put(&blob)?, "size": blob.len()}],
    })
    .to_string();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(manifest.as_bytes())?, "size": manifest.len()}]});
    std::fs::write(layout.join("index.json"), index.to_string())?;
    Ok(())
}

/// Runs `each` plain and `each` image tasks, one at a time, alternating
/// (after one of each to warm up: the image's pull is not measured);
/// their accept-to-RUNNING latencies in ms.
async fn alternate(
    ca: &CertificateAuthority,
    work_dir: &Path,
    launcher: &Path,
    isolation: strata_agent::isolation::Isolation,
    image: &str,
    each: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let Cluster {
        master_node,
        agent_node,
        scheduler_node,
        master,
        mut inbox,
    } = Cluster::start(ca, |master| {
        let mut agent = agent_config(master, work_dir, Some(launcher), isolation)?;
        if let Runner::Processes { images, .. } = &mut agent.runner {
            *images = Some(strata_agent::image_containers::ImageOptions {
                image_dirs: vec![work_dir.to_owned()],
                ..Default::default()
            });
        }
        Ok(agent)
    })
    .await?;
    let need: Resources = "cpus:0.5;mem:32".parse()?;
    let total = 2 * (each + 1);
    let (mut plain, mut imaged) = (Vec::new(), Vec::new());
    let mut framework_id = None;
    let mut launched = 0;
    let mut in_flight: Option<(TaskId, bool, Instant)> = None;
    let mut finished = 0;
    while finished < total {
        let Some(Received::Message(_, message)) = inbox.recv_within(Duration::from_secs(120)).await
        else {
            bail!("the cluster went quiet after {finished} of {total} tasks");
        };
        match message {
            ToScheduler::Subscribed {
                framework_id: id, ..
            } => framework_id = Some(id),
            ToScheduler::Offers(offers) => {
                let framework_id = framework_id.clone().context("offers before subscription")?;
                for offer in offers {
                    let mut operations = Vec::new();
                    if in_flight.is_none() && launched < total {
                        launched += 1;
                        let in_image = launched % 2 == 0;
                        let task_id = TaskId::new(format!("task-{launched}"))?;
                        operations.push(Operation::Launch(vec![TaskInfo {
                            task_id: task_id.clone(),
                            name: "true".into(),
                            agent_id: offer.agent_id.clone(),
                            resources: need.clone(),
                            kind: TaskKind::Command(CommandInfo {
                                shell: false,
                                value: "/bin/true".into(),
                                container: in_image.then(|| ContainerInfo {
                                    image: Some(image.to_owned()),
                                    ..ContainerInfo::default()
                                }),
                                ..CommandInfo::default()
                            }),
                            labels: Default::default(),
                        }]));
                        in_flight = Some((task_id, in_image, Instant::now()));
                    }
                    inbox
                        .send(
                            &master,
                            ToMaster::Accept {
                                framework_id: framework_id.clone(),
                                offer_ids: vec![offer.id],
                                operations,
                                filters: Filters {
                                    refuse: Duration::ZERO,
                                },
                            },
                        )
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
            ToScheduler::Update { status } => {
                if let (Some(update_id), Some(agent_id), Some(framework_id)) = (
                    status.update_id,
                    status.agent_id.clone(),
                    framework_id.clone(),
                ) {
                    inbox
                        .send(
                            &master,
                            ToMaster::Acknowledge {
                                framework_id,
                                agent_id,
                                task_id: status.task_id.clone(),
                                update_id,
                            },
                        )
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                let ours = in_flight
                    .as_ref()
                    .filter(|(task_id, ..)| *task_id == status.task_id)
                    .map(|(_, in_image, at)| (*in_image, *at));
                match (status.state, ours) {
                    (TaskState::Running, Some((in_image, at))) => {
                        let ms = at.elapsed().as_secs_f64() * 1e3;
                        // The first of each warms up.
                        if finished >= 2 {
                            if in_image { &mut imaged } else { &mut plain }.push(ms);
                        }
                    }
                    (TaskState::Finished, Some(_)) => {
                        finished += 1;
                        in_flight = None;
                    }
                    (state, _) if state.is_terminal() => {
                        bail!("{} ended {state}: {}", status.task_id, status.message)
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    for node in [&scheduler_node, &agent_node, &master_node] {
        node.close(Duration::from_secs(1)).await;
    }
    Ok((plain, imaged))
}
