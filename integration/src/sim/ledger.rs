//! What the simulation learns by watching the network: the status updates
//! agents send, the updates that reach each framework, the tasks
//! frameworks launch; and the checks on each framework's update stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use strata_protocol::{
    AgentId, FrameworkId, Operation, Reason, Source, TaskId, TaskState, TaskStatus, ToAgent,
    ToMaster, ToScheduler, UpdateId,
};
use strata_runtime::codec;

/// One task as its framework was told of it.
#[derive(Debug, Clone, Default)]
pub struct TaskRecord {
    /// The latest state the framework was told, and by whom.
    pub state: Option<TaskState>,
    pub source: Option<Source>,
    /// Why, with that state.
    pub reason: Option<Reason>,
    /// The updates with ids (the reliable stream), in the order they
    /// arrived, duplicates left out.
    pub stream: Vec<(UpdateId, TaskState)>,
    /// How many updates arrived, duplicates and reconciliation answers
    /// included.
    pub deliveries: usize,
}

impl TaskRecord {
    fn terminal(&self) -> Option<TaskState> {
        self.state.filter(|state| state.is_terminal())
    }
}

/// Everything one framework was told about its tasks, and what it
/// launched.
#[derive(Debug, Clone, Default)]
pub struct FrameworkLedger {
    pub tasks: BTreeMap<TaskId, TaskRecord>,
    pub launched: BTreeSet<TaskId>,
}

/// What the network showed, shared by the observer and the harness.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Which framework a scheduler's node speaks for.
    framework_at: HashMap<SocketAddr, FrameworkId>,
    pub frameworks: BTreeMap<FrameworkId, FrameworkLedger>,
    /// The updates agents sent for each task, by id, in the order first
    /// sent (the order the agent made them).
    pub generated: BTreeMap<(FrameworkId, TaskId), Vec<(UpdateId, TaskState)>>,
    /// Broken invariants, in the order found.
    pub violations: Vec<String>,
    /// Which master answered registrations in each epoch, the latest
    /// epoch each master answered in, and the latest of all.
    epoch_leaders: BTreeMap<u64, SocketAddr>,
    master_epochs: HashMap<SocketAddr, u64>,
    latest_epoch: u64,
    /// Agents a master told they were (re-)registered, frameworks it told
    /// they were subscribed: what its registry held by then.
    pub admitted: BTreeSet<AgentId>,
    pub subscribed: BTreeSet<FrameworkId>,
}

impl Ledger {
    /// The framework the scheduler at `addr` last subscribed as.
    pub fn framework_at(&self, addr: SocketAddr) -> Option<FrameworkId> {
        self.framework_at.get(&addr).cloned()
    }

    /// A frame was sent from `from`.
    pub(crate) fn sent(&mut self, from_agent: bool, from: SocketAddr, kind: &str, bytes: &[u8]) {
        match kind {
            "StatusUpdate" if from_agent => {
                let Some(ToMaster::StatusUpdate {
                    framework_id,
                    status,
                }) = payload::<ToMaster>(bytes)
                else {
                    return;
                };
                let Some(update_id) = status.update_id else {
                    return;
                };
                let made = self
                    .generated
                    .entry((framework_id, status.task_id))
                    .or_default();
                if !made.iter().any(|(id, _)| *id == update_id) {
                    made.push((update_id, status.state));
                }
            }
            "Accept" => {
                let Some(ToMaster::Accept {
                    framework_id,
                    operations,
                    ..
                }) = payload::<ToMaster>(bytes)
                else {
                    return;
                };
                self.framework_at.insert(from, framework_id.clone());
                let ledger = self.frameworks.entry(framework_id).or_default();
                for Operation::Launch(tasks) in operations {
                    ledger
                        .launched
                        .extend(tasks.into_iter().map(|task| task.task_id));
                }
            }
            _ => {}
        }
    }

    /// A frame was sent by the master at `from`: at most one master acts
    /// as the leader in an epoch (answers registrations in it), and a
    /// master whose epoch is behind the latest acts no more (sends
    /// nothing but pings, which a master that was just elected may send
    /// before its first answer, and not-leader answers).
    pub(crate) fn sent_by_master(&mut self, from: SocketAddr, kind: &str, bytes: &[u8]) {
        let epoch = match kind {
            "AgentRegistered" | "AgentReregistered" => match payload::<ToAgent>(bytes) {
                Some(
                    ToAgent::AgentRegistered {
                        epoch, agent_id, ..
                    }
                    | ToAgent::AgentReregistered {
                        epoch, agent_id, ..
                    },
                ) => {
                    self.admitted.insert(agent_id);
                    Some(epoch)
                }
                _ => None,
            },
            "Subscribed" => match payload::<ToScheduler>(bytes) {
                Some(ToScheduler::Subscribed {
                    epoch,
                    framework_id,
                }) => {
                    self.subscribed.insert(framework_id);
                    Some(epoch)
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(epoch) = epoch {
            let leader = *self.epoch_leaders.entry(epoch).or_insert(from);
            if leader != from {
                self.violations.push(format!(
                    "masters at {leader} and {from} both acted as the leader in epoch {epoch}"
                ));
            }
            if epoch < self.latest_epoch
                && self.epoch_leaders.get(&self.latest_epoch) != Some(&from)
            {
                self.violations.push(format!(
                    "the master at {from} answered in epoch {epoch} after epoch {} began",
                    self.latest_epoch
                ));
            }
            self.master_epochs.insert(from, epoch);
            self.latest_epoch = self.latest_epoch.max(epoch);
        } else if !matches!(kind, "Ping" | "NotLeader")
            && let Some(own) = self.master_epochs.get(&from)
            && *own < self.latest_epoch
            && self.epoch_leaders.get(&self.latest_epoch) != Some(&from)
        {
            self.violations.push(format!(
                "the master at {from} of epoch {own} sent {kind} after epoch {} began",
                self.latest_epoch
            ));
        }
    }

    /// A frame's body reached the scheduler's node at `to`.
    pub(crate) fn delivered_to_scheduler(&mut self, to: SocketAddr, body: &[u8]) {
        match payload_of_body::<ToScheduler>(body) {
            Some(ToScheduler::Subscribed { framework_id, .. }) => {
                self.framework_at.insert(to, framework_id.clone());
                self.frameworks.entry(framework_id).or_default();
            }
            Some(ToScheduler::Update { status }) => {
                let Some(framework_id) = self.framework_at.get(&to).cloned() else {
                    self.violations.push(format!(
                        "an update for {} reached {to}, which no framework subscribed from",
                        status.task_id
                    ));
                    return;
                };
                self.record(&framework_id, &status);
            }
            _ => {}
        }
    }

    /// Checks an update against what the framework heard before: no
    /// state after a terminal one, stream updates in the order the agent
    /// made them with none skipped, legal transitions, duplicates only of
    /// the latest update and with its state.
    fn record(&mut self, framework_id: &FrameworkId, status: &TaskStatus) {
        let made = self
            .generated
            .get(&(framework_id.clone(), status.task_id.clone()));
        let record = self
            .frameworks
            .entry(framework_id.clone())
            .or_default()
            .tasks
            .entry(status.task_id.clone())
            .or_default();
        record.deliveries += 1;
        let task = &status.task_id;
        let mut violations = Vec::new();
        if let Some(terminal) = record.terminal()
            && status.state != terminal
        {
            violations.push(format!(
                "{framework_id}/{task} left terminal state {terminal} for {} ({:?}, {})",
                status.state, status.source, status.message
            ));
        }
        if let Some(update_id) = status.update_id {
            match record.stream.iter().position(|(id, _)| *id == update_id) {
                Some(at) => {
                    let (_, state) = record.stream[at];
                    if state != status.state {
                        violations.push(format!(
                            "{framework_id}/{task}: update {update_id} came again with {} instead \
                             of {state}",
                            status.state
                        ));
                    }
                    if at + 1 != record.stream.len() {
                        violations.push(format!(
                            "{framework_id}/{task}: update {update_id} ({state}) came again after \
                             a later one"
                        ));
                    }
                }
                None => {
                    if let Some(made) = made
                        && let Some(at) = made.iter().position(|(id, _)| *id == update_id)
                    {
                        for (earlier, state) in &made[..at] {
                            if !record.stream.iter().any(|(id, _)| id == earlier) {
                                violations.push(format!(
                                    "{framework_id}/{task}: update {update_id} ({}) arrived \
                                     before the agent's earlier {earlier} ({state})",
                                    status.state
                                ));
                            }
                        }
                    }
                    if let Some((_, last)) = record.stream.last()
                        && !last.can_become(status.state)
                        && !last.is_terminal()
                    {
                        violations.push(format!(
                            "{framework_id}/{task}: illegal transition {last} -> {}",
                            status.state
                        ));
                    }
                    record.stream.push((update_id, status.state));
                }
            }
        } else if status.reason != Some(Reason::Reconciliation) && status.source != Source::Master {
            violations.push(format!(
                "{framework_id}/{task}: an update without an id that is no reconciliation answer"
            ));
        }
        if record.terminal().is_none() {
            record.state = Some(status.state);
            record.source = Some(status.source);
            record.reason = status.reason;
        }
        self.violations.extend(violations);
    }

    /// After convergence: every update an agent made reached its
    /// framework, unless the task's end came from the master (its agent's
    /// stream was lost with the agent, or the master ended it) or the
    /// framework is gone (not in `active`).
    pub(crate) fn check_complete(&self, active: &std::collections::HashSet<String>) -> Vec<String> {
        let mut missing = Vec::new();
        for ((framework_id, task_id), made) in &self.generated {
            if !active.contains(framework_id.as_str()) {
                continue;
            }
            let record = self
                .frameworks
                .get(framework_id)
                .and_then(|ledger| ledger.tasks.get(task_id));
            let Some(record) = record else {
                missing.push(format!(
                    "{framework_id}/{task_id}: the agent sent {} update(s); none reached the \
                     framework",
                    made.len()
                ));
                continue;
            };
            if record.terminal().is_some() && record.source == Some(Source::Master) {
                continue;
            }
            for (update_id, state) in made {
                if !record.stream.iter().any(|(id, _)| id == update_id) {
                    missing.push(format!(
                        "{framework_id}/{task_id}: update {update_id} ({state}) never reached \
                         the framework"
                    ));
                }
            }
        }
        missing
    }
}

/// The message kinds [`describe`] tells more of.
pub(crate) const DESCRIBED: &[&str] = &[
    "StatusUpdate",
    "Update",
    "Accept",
    "Offers",
    "Decline",
    "Reconcile",
];

/// A short account of a status update, launch, offer, decline or
/// reconciliation frame, for the trace.
pub(crate) fn describe(kind: &str, frame: &[u8]) -> Option<String> {
    let status = |status: &TaskStatus| {
        format!(
            " {} {} ({:?}{}{})",
            status.task_id,
            status.state,
            status.source,
            status
                .reason
                .map(|reason| format!(", {reason:?}"))
                .unwrap_or_default(),
            status
                .update_id
                .map(|id| format!(", {:08x}", id.0 as u32))
                .unwrap_or_default()
        )
    };
    match kind {
        "StatusUpdate" => match payload::<ToMaster>(frame)? {
            ToMaster::StatusUpdate { status: s, .. } => Some(status(&s)),
            _ => None,
        },
        "Update" => match payload::<ToScheduler>(frame)? {
            ToScheduler::Update { status: s } => Some(status(&s)),
            _ => None,
        },
        "Accept" => match payload::<ToMaster>(frame)? {
            ToMaster::Accept { operations, .. } => Some(
                operations
                    .iter()
                    .flat_map(|Operation::Launch(tasks)| tasks)
                    .map(|task| format!(" {}", task.task_id))
                    .collect(),
            ),
            _ => None,
        },
        "Offers" => match payload::<ToScheduler>(frame)? {
            ToScheduler::Offers(offers) => Some(
                offers
                    .iter()
                    .map(|offer| format!(" {} {} {}", offer.id, offer.agent_id, offer.resources))
                    .collect(),
            ),
            _ => None,
        },
        "Decline" => match payload::<ToMaster>(frame)? {
            ToMaster::Decline { offer_ids, .. } => Some(
                offer_ids
                    .iter()
                    .map(|offer_id| format!(" {offer_id}"))
                    .collect(),
            ),
            _ => None,
        },
        "Reconcile" => match payload::<ToMaster>(frame)? {
            ToMaster::Reconcile { tasks, .. } => Some(format!(" {} task(s)", tasks.len())),
            _ => None,
        },
        _ => None,
    }
}

/// The message in a whole frame (length prefix included), if it decodes
/// as `M`.
fn payload<M: serde::de::DeserializeOwned>(frame: &[u8]) -> Option<M> {
    payload_of_body(frame.get(4..)?)
}

/// The message in a frame's body, if it decodes as `M`.
fn payload_of_body<M: serde::de::DeserializeOwned>(body: &[u8]) -> Option<M> {
    let (_, payload) = codec::decode_envelope(body).ok()?;
    codec::decode("simulated frame", payload).ok()
}
