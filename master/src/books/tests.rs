//! The books driven by inputs, asserting on the commands they return.

use std::time::{Duration, Instant};

use strata_protocol::{
    AgentId, AgentInfo, Attributes, Capability, CommandInfo, Filters, FrameworkId, FrameworkInfo,
    Offer, OfferConstraint, OfferId, Operation, Resources, Source, Task, TaskId, TaskInfo,
    TaskKind, TaskState, TaskStatus, ToAgent, ToMaster, ToScheduler, UpdateId,
};
use strata_runtime::{PeerIdentity, Role, Upid};

use super::{Books, Command, Config, Input, invariants};

mod authorization;
mod hardening;
mod identity;
mod operator;
mod scheduler_calls;

fn r(text: &str) -> Resources {
    text.parse().unwrap()
}

fn pid(text: &str) -> Upid {
    text.parse().unwrap()
}

/// The identity the harness sends as for `from`.
fn default_identity(from: &Upid) -> PeerIdentity {
    match Role::owning(from.id()) {
        Some(Role::Agent) => PeerIdentity::simulated(Some(Role::Agent), &from.to_string()),
        Some(role) => PeerIdentity::simulated(Some(role), from.id()),
        None => PeerIdentity::simulated(Some(Role::Framework), "test-principal"),
    }
}

/// The books and a virtual clock, and the views of operators' snapshots
/// made from the changes, checked after every step against a snapshot
/// made from everything.
struct Harness {
    books: Books,
    now: Instant,
    views: crate::state::Views,
    /// Views redone after each input, as the master does a slice at a
    /// time (all of them when `None`); the snapshot is compared whenever
    /// they are up to date, and they are brought up to date every eighth
    /// input, as a snapshot would.
    views_slice: Option<usize>,
    /// Inputs checked, and how many times the snapshot was compared.
    checked: usize,
    compared: usize,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(Config::default())
    }

    fn with(config: Config) -> Harness {
        Harness {
            books: Books::new(config, "m1"),
            now: Instant::now(),
            views: Default::default(),
            views_slice: None,
            checked: 0,
            compared: 0,
        }
    }

    /// The invariants, and the snapshot made from the changes since the
    /// last one is the snapshot made from everything.
    fn check(&mut self) {
        invariants::check(&self.books).unwrap();
        // The registry is written after every step, as the shell may: an
        // agent's change that does not mark its entry for redoing shows
        // in the next step's invariants.
        let written = self.books.registry();
        assert_eq!(written.agents.len(), self.books.agents.len());
        let refreshed = match self.views_slice {
            None => self.views.refresh(&mut self.books, "m", 0, 0),
            Some(budget) => {
                self.checked += 1;
                if !self.views.update_some(&mut self.books, budget) {
                    if !self.checked.is_multiple_of(8) {
                        return;
                    }
                    self.views.update(&mut self.books);
                }
                self.views.state(&self.books, "m", 0, 0)
            }
        };
        self.compared += 1;
        let whole = crate::state::snapshot(&self.books, "m", 0, 0);
        assert_eq!(refreshed.agents, whole.agents, "agents");
        assert_eq!(refreshed.frameworks, whole.frameworks, "frameworks");
        assert_eq!(refreshed.tasks, whole.tasks, "tasks");
        assert_eq!(
            refreshed.completed_tasks, whole.completed_tasks,
            "completed tasks"
        );
        assert_eq!(refreshed.offers, whole.offers, "offers");
        assert_eq!(refreshed, whole);
    }

    /// Sends as the identity a sender with that process id has in these
    /// tests: agents are named by their address, schedulers share one
    /// principal, `operator` ids are operators.
    fn send(&mut self, from: &Upid, message: ToMaster) -> Vec<Command> {
        let identity = default_identity(from);
        self.send_as(from, identity, message)
    }

    fn send_as(&mut self, from: &Upid, sender: PeerIdentity, message: ToMaster) -> Vec<Command> {
        let out = self.books.handle(
            self.now,
            Input::Received {
                from: from.clone(),
                sender: std::sync::Arc::new(sender),
                message,
            },
        );
        self.check();
        out
    }

    /// Hands the books `input` now.
    fn input(&mut self, input: Input) -> Vec<Command> {
        let out = self.books.handle(self.now, input);
        self.check();
        out
    }

    /// A tick `seconds` later, and the pass of allocation it starts, a
    /// slice an input, as the shell sends them.
    fn advance(&mut self, seconds: u64) -> Vec<Command> {
        self.now += Duration::from_secs(seconds);
        let mut out = self.input(Input::Tick);
        while self.books.work_left() {
            out.extend(self.input(Input::Continue));
        }
        out
    }

    fn register_agent(&mut self, agent: &Upid, resources: &str, attributes: &str) -> AgentId {
        let info = AgentInfo {
            id: None,
            hostname: agent.addr().ip().to_string(),
            resources: r(resources),
            attributes: attributes.parse().unwrap(),
        };
        let identity = PeerIdentity::simulated(Some(Role::Agent), &agent.to_string());
        let out = self.send_as(agent, identity, ToMaster::RegisterAgent { info });
        out.iter()
            .find_map(|command| match command {
                Command::ToAgent(to, ToAgent::AgentRegistered { agent_id, .. }) if to == agent => {
                    Some(agent_id.clone())
                }
                _ => None,
            })
            .expect("agent registered")
    }

    fn subscribe(
        &mut self,
        scheduler: &Upid,
        info: FrameworkInfo,
        constraints: Vec<OfferConstraint>,
    ) -> (FrameworkId, Vec<Command>) {
        let out = self.send(scheduler, ToMaster::Subscribe { info, constraints });
        let id = out
            .iter()
            .find_map(|command| match command {
                Command::ToScheduler(to, ToScheduler::Subscribed { framework_id, .. })
                    if to == scheduler =>
                {
                    Some(framework_id.clone())
                }
                _ => None,
            })
            .expect("subscribed");
        (id, out)
    }

    fn finish(
        &mut self,
        agent: &Upid,
        framework_id: &FrameworkId,
        task_id: &str,
        state: TaskState,
    ) -> Vec<Command> {
        let status = TaskStatus {
            task_id: TaskId::new(task_id).unwrap(),
            state,
            source: Source::Executor,
            reason: None,
            message: String::new(),
            agent_id: None,
            executor_id: None,
            update_id: Some(UpdateId(7)),
            timestamp_ms: 0,
            sandbox: None,
        };
        self.send(
            agent,
            ToMaster::StatusUpdate {
                framework_id: framework_id.clone(),
                status,
            },
        )
    }
}

fn offers_to(out: &[Command], scheduler: &Upid) -> Vec<Offer> {
    out.iter()
        .filter_map(|command| match command {
            Command::ToScheduler(to, ToScheduler::Offers(offers)) if to == scheduler => {
                Some(offers.clone())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

fn updates_to(out: &[Command], scheduler: &Upid) -> Vec<TaskStatus> {
    out.iter()
        .filter_map(|command| match command {
            Command::ToScheduler(to, ToScheduler::Update { status }) if to == scheduler => {
                Some(status.clone())
            }
            _ => None,
        })
        .collect()
}

fn task(id: &str, agent: &AgentId, resources: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id).unwrap(),
        name: id.to_owned(),
        agent_id: agent.clone(),
        resources: r(resources),
        kind: TaskKind::Command(CommandInfo::shell("true")),
        labels: Default::default(),
    }
}

/// A task an agent reports running when it comes back.
fn running_task(framework_id: &FrameworkId, info: TaskInfo) -> Task {
    Task {
        info,
        framework_id: framework_id.clone(),
        state: TaskState::Running,
        status: None,
    }
}

/// What an agent registered before says of itself when it comes back.
fn returning_agent(agent_id: &AgentId, resources: &str) -> AgentInfo {
    AgentInfo {
        id: Some(agent_id.clone()),
        hostname: "10.0.0.1".into(),
        resources: r(resources),
        attributes: Attributes::new(),
    }
}

fn accept(
    framework_id: &FrameworkId,
    offers: &[&Offer],
    tasks: Vec<TaskInfo>,
    refuse_seconds: u64,
) -> ToMaster {
    ToMaster::Accept {
        framework_id: framework_id.clone(),
        offer_ids: offers.iter().map(|offer| offer.id.clone()).collect(),
        operations: vec![Operation::Launch(tasks)],
        filters: Filters {
            refuse: Duration::from_secs(refuse_seconds),
        },
    }
}

/// The seeds' walk-through: framework 1 is offered the whole
/// `cpus:4;mem:4096` agent and launches ⟨2 CPU, 1 GB⟩ and ⟨1 CPU, 2 GB⟩;
/// the remaining ⟨1 CPU, 1 GB⟩ is offered to framework 2; when the tasks
/// finish, their resources are offered again.
#[test]
fn seed_walkthrough() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
    let (s1, s2) = (
        pid("scheduler-1@10.0.0.9:4000"),
        pid("scheduler-2@10.0.0.9:4001"),
    );
    let (fw1, out) = h.subscribe(&s1, FrameworkInfo::new("fw1", "alice"), vec![]);
    let offers = offers_to(&out, &s1);
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].resources, r("cpus:4;mem:4096"));
    let (fw2, out) = h.subscribe(&s2, FrameworkInfo::new("fw2", "bob"), vec![]);
    assert!(
        offers_to(&out, &s2).is_empty(),
        "nothing free for framework 2 yet"
    );

    let out = h.send(
        &s1,
        accept(
            &fw1,
            &[&offers[0]],
            vec![
                task("t1", &agent_id, "cpus:2;mem:1024"),
                task("t2", &agent_id, "cpus:1;mem:2048"),
            ],
            0,
        ),
    );
    let launches: Vec<_> = out
        .iter()
        .filter(|command| matches!(command, Command::ToAgent(to, ToAgent::RunTask { .. }) if to == &agent))
        .collect();
    assert_eq!(launches.len(), 2);
    let second = offers_to(&out, &s2);
    assert_eq!(second.len(), 1, "{out:#?}");
    assert_eq!(second[0].resources, r("cpus:1;mem:1024"));

    // Framework 2 declines; the tasks finish and their resources are
    // offered again.
    h.send(
        &s2,
        ToMaster::Decline {
            framework_id: fw2.clone(),
            offer_ids: vec![second[0].id.clone()],
            filters: Filters::default(),
        },
    );
    let out = h.finish(&agent, &fw1, "t1", TaskState::Finished);
    assert_eq!(updates_to(&out, &s1)[0].state, TaskState::Finished);
    h.finish(&agent, &fw1, "t2", TaskState::Finished);
    h.advance(1);
    // Everything the tasks held is offered again (to either framework:
    // what framework 2 declined stays refused to it, more is not).
    assert_eq!(offered_or_free(&h, &agent_id), r("cpus:4;mem:4096"));
    assert!(
        h.books.free(&agent_id).is_some_and(|free| free.is_empty()),
        "all of it is offered"
    );
}

/// An agent's resources that are free or in outstanding offers.
fn offered_or_free(h: &Harness, agent_id: &AgentId) -> Resources {
    let mut total = h.books.free(agent_id).unwrap_or_default();
    for entry in h.books.offers().values() {
        if &entry.offer.agent_id == agent_id {
            total.add(&entry.offer.resources);
        }
    }
    total
}

#[test]
fn the_invariants_catch_a_framework_listing_an_offer_it_does_not_hold() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    h.register_agent(&agent, "cpus:1;mem:1024", "");
    let (first, out) = h.subscribe(
        &pid("s@10.0.0.9:4000"),
        FrameworkInfo::new("f", "u"),
        vec![],
    );
    let offer = offers_to(&out, &pid("s@10.0.0.9:4000")).remove(0);
    let (second, _) = h.subscribe(
        &pid("s2@10.0.0.9:4001"),
        FrameworkInfo::new("g", "u"),
        vec![],
    );
    invariants::check(&h.books).unwrap();
    // Another framework's offer, then one that is not outstanding.
    let entry = h.books.frameworks.get_mut(&second).unwrap();
    entry.offers.insert(offer.id.clone());
    let broken = invariants::check(&h.books).unwrap_err();
    assert!(
        broken.contains(&format!("lists offer {}", offer.id)),
        "{broken}"
    );
    let entry = h.books.frameworks.get_mut(&second).unwrap();
    entry.offers.clear();
    let gone = OfferId::try_from("m1-O999".to_owned()).unwrap();
    h.books
        .frameworks
        .get_mut(&first)
        .unwrap()
        .offers
        .insert(gone);
    assert!(invariants::check(&h.books).is_err());
}

#[test]
fn resources_a_task_frees_are_offered_at_once() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:1;mem:1024", "");
    let scheduler = pid("s@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    let offer = offers_to(&out, &scheduler).remove(0);
    h.send(
        &scheduler,
        accept(
            &framework_id,
            &[&offer],
            vec![task("t", &agent_id, "cpus:1;mem:1024")],
            0,
        ),
    );
    // No tick between the task's end and the new offer.
    let out = h.finish(&agent, &framework_id, "t", TaskState::Finished);
    assert_eq!(offers_to(&out, &scheduler).len(), 1);
}

#[test]
fn a_new_executor_is_charged_once_released_when_it_exits_and_reported_lost() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:1024", "");
    let scheduler = pid("s@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    let offer = offers_to(&out, &scheduler).remove(0);
    let executor = strata_protocol::ExecutorInfo {
        executor_id: strata_protocol::ExecutorId::new("e1").unwrap(),
        name: "e1".into(),
        command: CommandInfo::shell("run-executor"),
        resources: r("cpus:1;mem:128"),
    };
    let on_executor = |id: &str| TaskInfo {
        kind: TaskKind::Executor(executor.clone()),
        ..task(id, &agent_id, "cpus:1;mem:128")
    };
    // Two tasks of one new executor: 1 + 1 cpus of tasks, 1 of executor.
    let out = h.send(
        &scheduler,
        accept(
            &framework_id,
            &[&offer],
            vec![on_executor("a"), on_executor("b")],
            3600,
        ),
    );
    assert!(updates_to(&out, &scheduler).is_empty(), "{out:#?}");
    assert_eq!(h.books.free(&agent_id), Some(r("cpus:1;mem:640")));
    h.finish(&agent, &framework_id, "a", TaskState::Finished);
    h.finish(&agent, &framework_id, "b", TaskState::Finished);
    assert_eq!(
        offered_or_free(&h, &agent_id),
        r("cpus:3;mem:896"),
        "the executor still holds its share"
    );
    let out = h.send(
        &agent,
        ToMaster::ExecutorExited {
            framework_id,
            executor_id: executor.executor_id.clone(),
        },
    );
    assert!(
        out.iter().any(|command| matches!(
            command,
            Command::ToScheduler(to, ToScheduler::ExecutorLost { executor_id, .. })
                if to == &scheduler && executor_id.as_str() == "e1"
        )),
        "the scheduler hears its executor is lost: {out:#?}"
    );
    assert_eq!(offered_or_free(&h, &agent_id), r("cpus:4;mem:1024"));
}

#[test]
fn a_decline_keeps_the_agent_away_for_refuse_seconds() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    h.register_agent(&agent, "cpus:1;mem:1024", "");
    let scheduler = pid("s@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    let offer = offers_to(&out, &scheduler).remove(0);
    h.send(
        &scheduler,
        ToMaster::Decline {
            framework_id,
            offer_ids: vec![offer.id],
            filters: Filters {
                refuse: Duration::from_secs(10),
            },
        },
    );
    for second in 1..10 {
        let out = h.advance(1);
        assert!(
            offers_to(&out, &scheduler).is_empty(),
            "offered again after {second} s"
        );
    }
    let out = h.advance(1);
    assert_eq!(offers_to(&out, &scheduler).len(), 1);
}

/// Offers the shell could not send to their scheduler (its send queue
/// was full) come back at once, as a decline with the default filters:
/// the agent is offered to another framework, and to this one again
/// once the refusal is over. Nobody else's offers are touched.
#[test]
fn offers_that_were_not_sent_come_back() {
    let mut h = Harness::new();
    let first = pid("agent@10.0.0.1:5051");
    let second = pid("agent@10.0.0.2:5051");
    let first_id = h.register_agent(&first, "cpus:1;mem:1024", "");
    h.register_agent(&second, "cpus:1;mem:1024", "");
    let slow = pid("slow@10.0.0.9:4000");
    let (_, out) = h.subscribe(&slow, FrameworkInfo::new("slow", "u"), vec![]);
    let offers = offers_to(&out, &slow);
    assert_eq!(offers.len(), 2);
    let (lost, kept): (Vec<Offer>, Vec<Offer>) = offers
        .into_iter()
        .partition(|offer| offer.agent_id == first_id);
    let other = pid("other@10.0.0.8:4000");
    let (other_id, out) = h.subscribe(&other, FrameworkInfo::new("other", "u"), vec![]);
    assert!(offers_to(&out, &other).is_empty(), "everything is offered");

    // Someone else's process id gives nothing back.
    h.input(Input::OffersNotSent {
        to: other.clone(),
        offers: vec![lost[0].id.clone()],
    });
    assert!(h.books.offers().contains_key(&lost[0].id));

    let out = h.input(Input::OffersNotSent {
        to: slow.clone(),
        offers: vec![lost[0].id.clone()],
    });
    assert!(!h.books.offers().contains_key(&lost[0].id), "taken back");
    assert!(
        h.books.offers().contains_key(&kept[0].id),
        "the other stays"
    );
    let to_other = offers_to(&out, &other);
    assert_eq!(to_other.len(), 1, "the agent goes to the other framework");
    assert_eq!(to_other[0].agent_id, first_id);
    assert!(
        out.iter()
            .all(|command| !matches!(command, Command::ToScheduler(to, _) if to == &slow)),
        "nothing is rescinded from a scheduler that never had it: {out:#?}"
    );

    // Once the other declines for good, the slow framework has it again
    // after the default refusal of 5 s, not before.
    h.send(
        &other,
        ToMaster::Decline {
            framework_id: other_id,
            offer_ids: vec![to_other[0].id.clone()],
            filters: Filters {
                refuse: Duration::from_secs(3600),
            },
        },
    );
    for second in 1..5 {
        assert!(
            offers_to(&h.advance(1), &slow).is_empty(),
            "offered again after {second} s"
        );
    }
    let again = offers_to(&h.advance(1), &slow);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].agent_id, first_id);
}

/// The seeds' "only nodes with at least 32 GB of RAM".
#[test]
fn the_32_gb_filter() {
    let mut h = Harness::new();
    h.register_agent(&pid("small@10.0.0.1:5051"), "cpus:8;mem:16384", "");
    let large = h.register_agent(&pid("large@10.0.0.2:5051"), "cpus:8;mem:65536", "");
    let scheduler = pid("s@10.0.0.9:4000");
    let (_, out) = h.subscribe(
        &scheduler,
        FrameworkInfo::new("big-memory", "u"),
        vec![OfferConstraint::MinimumFree(r("mem:32768"))],
    );
    let offers = offers_to(&out, &scheduler);
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].agent_id, large);
    for _ in 0..3 {
        assert!(offers_to(&h.advance(1), &scheduler).is_empty());
    }
}

#[test]
fn invalid_accepts_are_answered_and_nothing_breaks() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:2;mem:2048", "");
    let scheduler = pid("s@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    let offer = offers_to(&out, &scheduler).remove(0);
    let out = h.send(
        &scheduler,
        accept(
            &framework_id,
            &[&offer],
            vec![
                task("ok", &agent_id, "cpus:1;mem:512"),
                task("ok", &agent_id, "cpus:0.5;mem:128"),
                task("huge", &agent_id, "cpus:8;mem:128"),
                task("empty", &agent_id, ""),
                task(
                    "elsewhere",
                    &AgentId::new("other").unwrap(),
                    "cpus:0.1;mem:32",
                ),
            ],
            5,
        ),
    );
    let updates = updates_to(&out, &scheduler);
    let states: Vec<_> = updates
        .iter()
        .map(|status| (status.task_id.to_string(), status.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("huge".to_owned(), TaskState::Error),
            ("empty".to_owned(), TaskState::Error),
            ("elsewhere".to_owned(), TaskState::Error),
        ]
    );
    assert!(
        updates[0].message.contains("needs"),
        "{}",
        updates[0].message
    );
    // The second "ok" is refused without an update about "ok", which
    // runs: the scheduler hears of it as an error.
    let errors: Vec<&String> = out
        .iter()
        .filter_map(|command| match command {
            Command::ToScheduler(to, ToScheduler::Error { message }) if *to == scheduler => {
                Some(message)
            }
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("a launch of ok was refused"),
        "{}",
        errors[0]
    );
    // The offer is used up: accepting it again drops the tasks.
    let out = h.send(
        &scheduler,
        accept(
            &framework_id,
            &[&offer],
            vec![task("late", &agent_id, "cpus:0.1")],
            0,
        ),
    );
    let updates = updates_to(&out, &scheduler);
    assert_eq!(updates[0].state, TaskState::Dropped);
    assert!(updates[0].message.contains("no longer valid"));
}

#[test]
fn calls_for_another_framework_are_refused() {
    let mut h = Harness::new();
    let owner = pid("owner@10.0.0.9:4000");
    let intruder = pid("intruder@10.0.0.9:4001");
    let (framework_id, _) = h.subscribe(&owner, FrameworkInfo::new("f", "u"), vec![]);
    let out = h.send(
        &intruder,
        ToMaster::Teardown {
            framework_id: framework_id.clone(),
        },
    );
    assert!(
        matches!(&out[..], [Command::Log(_), Command::ToScheduler(to, ToScheduler::Error { .. })] if to == &intruder)
    );
    assert!(h.books.frameworks().contains_key(&framework_id));
}

#[test]
fn a_silent_agent_is_lost_and_its_tasks_reported_then_reconciled_on_return() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
    let (plain, aware) = (pid("plain@10.0.0.9:4000"), pid("aware@10.0.0.9:4001"));
    let (plain_id, out) = h.subscribe(&plain, FrameworkInfo::new("plain", "u"), vec![]);
    let offer = offers_to(&out, &plain).remove(0);
    h.send(
        &plain,
        accept(
            &plain_id,
            &[&offer],
            vec![task("p1", &agent_id, "cpus:1;mem:512")],
            3600,
        ),
    );
    let mut info = FrameworkInfo::new("aware", "u");
    info.capabilities.insert(Capability::PartitionAware);
    let (aware_id, out) = h.subscribe(&aware, info, vec![]);
    let offer = offers_to(&out, &aware).remove(0);
    h.send(
        &aware,
        accept(
            &aware_id,
            &[&offer],
            vec![task("a1", &agent_id, "cpus:1;mem:512")],
            3600,
        ),
    );
    h.finish(&agent, &plain_id, "p1", TaskState::Running);
    h.finish(&agent, &aware_id, "a1", TaskState::Running);

    // The agent answers nothing: 5 pings of 15 s go unanswered. Its first
    // ping comes within the first 15 s (agents' phases are spread).
    let mut lost_at = None;
    let mut first_ping = None;
    for second in 1..=120 {
        let out = h.advance(1);
        if first_ping.is_none()
            && out
                .iter()
                .any(|command| matches!(command, Command::ToAgent(to, ToAgent::Ping { .. }) if to == &agent))
        {
            first_ping = Some(second);
        }
        if out.iter().any(|command| {
            matches!(
                command,
                Command::ToScheduler(_, ToScheduler::AgentLost { .. })
            )
        }) {
            lost_at = Some(second);
            assert_eq!(updates_to(&out, &plain)[0].state, TaskState::Lost);
            assert_eq!(updates_to(&out, &aware)[0].state, TaskState::Unreachable);
            break;
        }
    }
    let first_ping = first_ping.expect("pinged");
    assert!(
        (1..=15).contains(&first_ping),
        "first ping at {first_ping} s"
    );
    assert_eq!(
        lost_at,
        Some(first_ping + 75),
        "15 s pings, unreachable at the 6th ping time"
    );

    // It comes back with both tasks still running.
    let running = |framework_id: &FrameworkId, id: &str| {
        running_task(framework_id, task(id, &agent_id, "cpus:1;mem:512"))
    };
    let info = returning_agent(&agent_id, "cpus:4;mem:4096");
    let out = h.send(
        &agent,
        ToMaster::ReregisterAgent {
            info,
            tasks: vec![running(&plain_id, "p1"), running(&aware_id, "a1")],
        },
    );
    // The partition-aware framework sees its task running again ...
    let aware_updates = updates_to(&out, &aware);
    assert_eq!(aware_updates[0].state, TaskState::Running);
    // ... the other framework was told LOST, so its task is killed, not
    // resurrected.
    assert!(out.iter().any(|command| matches!(
        command,
        Command::ToAgent(to, ToAgent::KillTask { task_id, .. }) if to == &agent && task_id.as_str() == "p1"
    )));
    assert!(updates_to(&out, &plain).is_empty());
    // The kill's KILLED would take p1 out of LOST, a terminal state: it
    // goes no further, and the master acknowledges it for the framework.
    let out = h.finish(&agent, &plain_id, "p1", TaskState::Killed);
    assert!(updates_to(&out, &plain).is_empty(), "{out:?}");
    assert!(out.iter().any(|command| matches!(
        command,
        Command::ToAgent(to, ToAgent::StatusUpdateAcknowledged { task_id, update_id, .. })
            if to == &agent && task_id.as_str() == "p1" && *update_id == UpdateId(7)
    )));
}

/// A kill that went to an agent that had just died (the master had not
/// seen it go) reaches the agent's next life when it re-registers, and
/// is sent no more once the task ended.
#[test]
fn a_kill_sent_to_a_dying_agent_is_sent_again_when_it_returns() {
    let mut h = Harness::new();
    let old = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&old, "cpus:4;mem:4096", "");
    let scheduler = pid("s@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    let offer = offers_to(&out, &scheduler).remove(0);
    h.send(
        &scheduler,
        accept(
            &framework_id,
            &[&offer],
            vec![task("t", &agent_id, "cpus:1;mem:128")],
            3600,
        ),
    );
    h.finish(&old, &framework_id, "t", TaskState::Running);
    let kill = ToMaster::Kill {
        framework_id: framework_id.clone(),
        task_id: TaskId::new("t").unwrap(),
    };
    let out = h.send(&scheduler, kill);
    assert!(out.iter().any(|command| matches!(
        command,
        Command::ToAgent(to, ToAgent::KillTask { .. }) if to == &old
    )));
    // The agent had died; its next life comes back with the task.
    let new = pid("agent@10.0.0.1:5052");
    let running = running_task(&framework_id, task("t", &agent_id, "cpus:1;mem:128"));
    // The same certificate as its last life's, at a new address.
    let identity = default_identity(&old);
    let out = h.send_as(
        &new,
        identity.clone(),
        ToMaster::ReregisterAgent {
            info: returning_agent(&agent_id, "cpus:4;mem:4096"),
            tasks: vec![running.clone()],
        },
    );
    let kills = |out: &[Command]| {
        out.iter()
            .filter(|command| {
                matches!(
                    command,
                    Command::ToAgent(to, ToAgent::KillTask { task_id, .. })
                        if to == &new && task_id.as_str() == "t"
                )
            })
            .count()
    };
    assert_eq!(kills(&out), 1, "{out:?}");
    h.check();
    // Once it ended, a later return sends no kill.
    h.finish(&new, &framework_id, "t", TaskState::Killed);
    let out = h.send_as(
        &new,
        identity,
        ToMaster::ReregisterAgent {
            info: returning_agent(&agent_id, "cpus:4;mem:4096"),
            tasks: vec![],
        },
    );
    assert_eq!(kills(&out), 0, "{out:?}");
}

#[test]
fn a_scheduler_that_disconnects_without_failover_is_removed() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
    let scheduler = pid("s@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    let offer = offers_to(&out, &scheduler).remove(0);
    h.send(
        &scheduler,
        accept(
            &framework_id,
            &[&offer],
            vec![task("t", &agent_id, "cpus:1;mem:128")],
            0,
        ),
    );
    let out = h.books.handle(h.now, Input::Exited(scheduler.clone()));
    assert!(out.iter().any(|command| matches!(
        command,
        Command::ToAgent(to, ToAgent::ShutdownFramework { .. }) if to == &agent
    )));
    assert!(h.books.frameworks().is_empty());
    assert_eq!(h.books.free(&agent_id), Some(r("cpus:4;mem:4096")));
    h.check();

    // It cannot come back under its old id.
    let returning = pid("s@10.0.0.9:4001");
    let info = FrameworkInfo {
        id: Some(framework_id.clone()),
        ..FrameworkInfo::new("f", "u")
    };
    let out = h.send(
        &returning,
        ToMaster::Subscribe {
            info,
            constraints: vec![],
        },
    );
    assert!(
        out.iter().any(|command| matches!(
            command,
            Command::ToScheduler(to, ToScheduler::Error { message })
                if to == &returning && message.contains("was removed")
        )),
        "{out:#?}"
    );
    assert!(h.books.frameworks().is_empty());
}

/// A framework with more tasks than one input takes is removed a slice
/// an input: at once it has no scheduler, offers or way back; each input
/// after ends at most `removal_slice` tasks and agents, every step
/// keeping the invariants; in the end each task ended KILLED once, each
/// agent that held something was told once, its executor's share came
/// back, and it is filed among the completed frameworks.
#[test]
fn a_framework_with_many_tasks_is_removed_a_slice_an_input() {
    let mut h = Harness::with(Config {
        removal_slice: 4,
        ..Config::default()
    });
    // Tasks on the first six agents; offers of the other five held.
    let agents: Vec<Upid> = (0..11)
        .map(|index| pid(&format!("agent@10.0.2.{index}:5051")))
        .collect();
    let agent_ids: Vec<AgentId> = agents
        .iter()
        .map(|agent| h.register_agent(agent, "cpus:4;mem:4096", ""))
        .collect();
    let scheduler = pid("s@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    let offers = offers_to(&out, &scheduler);
    assert_eq!(offers.len(), 11);
    let executor = strata_protocol::ExecutorInfo {
        executor_id: strata_protocol::ExecutorId::new("e1").unwrap(),
        name: "e1".into(),
        command: CommandInfo::shell("run-executor"),
        resources: r("cpus:0.5;mem:64"),
    };
    for offer in &offers {
        let index = agent_ids
            .iter()
            .position(|id| *id == offer.agent_id)
            .unwrap();
        if index >= 6 {
            continue;
        }
        let mut tasks: Vec<TaskInfo> = (0..3)
            .map(|n| task(&format!("t{index}-{n}"), &offer.agent_id, "cpus:1;mem:128"))
            .collect();
        if index == 0 {
            tasks[0].kind = TaskKind::Executor(executor.clone());
        }
        h.send(&scheduler, accept(&framework_id, &[offer], tasks, 3600));
    }
    for (index, agent) in agents.iter().take(6).enumerate() {
        for n in 0..3 {
            h.finish(
                agent,
                &framework_id,
                &format!("t{index}-{n}"),
                TaskState::Running,
            );
        }
    }
    // Another framework's offers stay as they were.
    let other = pid("other@10.0.0.9:4001");
    h.subscribe(&other, FrameworkInfo::new("other", "u"), vec![]);

    let killed = |out: &[Command]| -> Vec<TaskId> {
        out.iter()
            .filter_map(|command| match command {
                Command::Log(super::Event::TaskUpdated { status, .. })
                    if status.state == TaskState::Killed =>
                {
                    Some(status.task_id.clone())
                }
                _ => None,
            })
            .collect()
    };
    let told = |out: &[Command]| -> Vec<Upid> {
        out.iter()
            .filter_map(|command| match command {
                Command::ToAgent(to, ToAgent::ShutdownFramework { framework_id: id })
                    if *id == framework_id =>
                {
                    Some(to.clone())
                }
                _ => None,
            })
            .collect()
    };
    let removed = |out: &[Command]| {
        out.iter().any(|command| {
            matches!(command, Command::Log(super::Event::FrameworkRemoved { framework_id: id, .. }) if *id == framework_id)
        })
    };
    let out = h.send(
        &scheduler,
        ToMaster::Teardown {
            framework_id: framework_id.clone(),
        },
    );
    let (mut all_killed, mut all_told) = (killed(&out), told(&out));
    // Four of its five offers went back first.
    assert!(all_killed.is_empty() && all_told.is_empty(), "{out:#?}");
    assert_eq!(h.books.frameworks()[&framework_id].offers.len(), 1);
    assert!(!removed(&out));
    assert!(h.books.work_left());
    let framework = &h.books.frameworks()[&framework_id];
    assert!(framework.removing.is_some() && framework.pid.is_none());
    // Its scheduler is no longer its, and it cannot subscribe again.
    let out = h.send(
        &scheduler,
        ToMaster::Revive {
            framework_id: framework_id.clone(),
        },
    );
    assert!(
        out.iter().any(|command| matches!(command, Command::ToScheduler(to, ToScheduler::Error { .. }) if *to == scheduler)),
        "{out:#?}"
    );
    let info = FrameworkInfo {
        id: Some(framework_id.clone()),
        ..FrameworkInfo::new("f", "u")
    };
    let out = h.send(
        &pid("s@10.0.0.9:4002"),
        ToMaster::Subscribe {
            info,
            constraints: vec![],
        },
    );
    assert!(
        out.iter().any(|command| matches!(command, Command::ToScheduler(_, ToScheduler::Error { message }) if message.contains("was removed"))),
        "{out:#?}"
    );
    // A master taking over would not know it.
    assert!(
        h.books
            .registry()
            .frameworks
            .iter()
            .all(|info| info.id.as_ref() != Some(&framework_id))
    );
    // A task that ends on its own meanwhile is not killed again.
    h.finish(&agents[5], &framework_id, "t5-2", TaskState::Finished);
    let mut inputs = 0;
    let mut gone = false;
    while h.books.work_left() {
        let out = h.input(Input::Continue);
        let slice = killed(&out);
        assert!(slice.len() <= 4, "{slice:?}");
        gone |= removed(&out);
        all_killed.extend(slice);
        all_told.extend(told(&out));
        inputs += 1;
        assert!(inputs < 100, "the removal never ends");
    }
    assert!(gone, "filed as removed at the end");
    all_killed.sort();
    let mut expected: Vec<TaskId> = (0..6)
        .flat_map(|index| (0..3).map(move |n| format!("t{index}-{n}")))
        .filter(|id| id != "t5-2")
        .map(|id| TaskId::new(id).unwrap())
        .collect();
    expected.sort();
    assert_eq!(all_killed, expected);
    all_told.sort();
    let mut every_agent = agents[..6].to_vec();
    every_agent.sort();
    assert_eq!(all_told, every_agent, "each agent told once");
    assert!(!h.books.frameworks().contains_key(&framework_id));
    for agent_id in &agent_ids {
        assert_eq!(offered_or_free(&h, agent_id), r("cpus:4;mem:4096"));
    }
}

/// An agent with more of a framework's tasks than one input takes is
/// not done in one input: its tasks end a slice at a time too. Coming
/// back meanwhile with every task, it is told to shut the framework down
/// for those already ended, which are not taken back nor ended twice.
#[test]
fn many_tasks_on_one_agent_are_removed_a_slice_an_input() {
    let mut h = Harness::with(Config {
        removal_slice: 4,
        ..Config::default()
    });
    let agent = pid("agent@10.0.3.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:16;mem:4096", "");
    let scheduler = pid("s@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    let offer = offers_to(&out, &scheduler).remove(0);
    let tasks: Vec<TaskInfo> = (0..10)
        .map(|n| task(&format!("t{n}"), &agent_id, "cpus:1;mem:64"))
        .collect();
    h.send(&scheduler, accept(&framework_id, &[&offer], tasks, 3600));
    let killed = |out: &[Command]| {
        out.iter()
            .filter(|command| {
                matches!(command, Command::Log(super::Event::TaskUpdated { status, .. })
                    if status.state == TaskState::Killed)
            })
            .count()
    };
    let mut out = h.send(
        &scheduler,
        ToMaster::Teardown {
            framework_id: framework_id.clone(),
        },
    );
    let mut ended = killed(&out);
    assert!(ended > 0 && ended < 10);
    let info = returning_agent(&agent_id, "cpus:16;mem:4096");
    let back = h.send(
        &agent,
        ToMaster::ReregisterAgent {
            info,
            tasks: (0..10)
                .map(|n| {
                    running_task(
                        &framework_id,
                        task(&format!("t{n}"), &agent_id, "cpus:1;mem:64"),
                    )
                })
                .collect(),
        },
    );
    assert!(back.iter().any(|command| matches!(
        command,
        Command::ToAgent(to, ToAgent::ShutdownFramework { .. }) if *to == agent
    )));
    out = back;
    let mut inputs = 0;
    loop {
        let now = killed(&out);
        assert!(now <= 4, "{now} tasks ended in one input");
        if inputs > 0 {
            ended += now;
        }
        if !h.books.work_left() {
            break;
        }
        inputs += 1;
        assert!(inputs < 20, "the removal never ends");
        out = h.input(Input::Continue);
    }
    assert_eq!(ended, 10);
    assert!(!h.books.frameworks().contains_key(&framework_id));
    assert_eq!(offered_or_free(&h, &agent_id), r("cpus:16;mem:4096"));
}

#[test]
fn a_scheduler_taking_over_is_offered_what_its_predecessor_held() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
    let first = pid("s@10.0.0.9:4000");
    let info = FrameworkInfo {
        failover_timeout: Duration::from_secs(60),
        ..FrameworkInfo::new("f", "u")
    };
    let (framework_id, out) = h.subscribe(&first, info.clone(), vec![]);
    assert_eq!(offers_to(&out, &first).len(), 1);
    // The master has not noticed the first scheduler is gone when the
    // second one subscribes with the framework's id.
    let second = pid("s@10.0.0.8:4000");
    let (same, out) = h.subscribe(
        &second,
        FrameworkInfo {
            id: Some(framework_id.clone()),
            ..info
        },
        vec![],
    );
    assert_eq!(same, framework_id);
    let offers = offers_to(&out, &second);
    assert_eq!(offers.len(), 1, "{out:#?}");
    assert_eq!(offers[0].resources, r("cpus:4;mem:4096"));
    h.check();

    // The second scheduler runs a task, keeping the rest refused, and
    // goes away; a third takes over and is offered the rest at once.
    h.send(
        &second,
        accept(
            &framework_id,
            &[&offers[0]],
            vec![task("t", &agent_id, "cpus:1;mem:128")],
            5,
        ),
    );
    h.books.handle(h.now, Input::Exited(second.clone()));
    let third = pid("s@10.0.0.7:4000");
    let (_, out) = h.subscribe(
        &third,
        FrameworkInfo {
            id: Some(framework_id.clone()),
            ..FrameworkInfo::new("f", "u")
        },
        vec![],
    );
    let offers = offers_to(&out, &third);
    assert_eq!(offers.len(), 1, "{out:#?}");
    assert_eq!(offers[0].resources, r("cpus:3;mem:3968"));
    h.check();
}

#[test]
fn offers_time_out_when_configured() {
    let mut h = Harness::with(Config {
        offer_timeout: Some(Duration::from_secs(30)),
        ..Config::default()
    });
    h.register_agent(&pid("agent@10.0.0.1:5051"), "cpus:1;mem:1024", "");
    let scheduler = pid("s@10.0.0.9:4000");
    let (_, out) = h.subscribe(&scheduler, FrameworkInfo::new("hoarder", "u"), vec![]);
    let offer = offers_to(&out, &scheduler).remove(0);
    let mut rescinded = false;
    for _ in 0..30 {
        let out = h.advance(1);
        rescinded |= out.iter().any(|command| matches!(
            command,
            Command::ToScheduler(_, ToScheduler::OfferRescinded { offer_id }) if offer_id == &offer.id
        ));
    }
    assert!(rescinded);
    let _: &OfferId = &offer.id;
}

/// Agents registered at one instant are pinged spread over the ping
/// interval, each once an interval and in its own phase after that: not
/// all of them in one tick, every interval.
#[test]
fn pings_of_agents_registered_together_are_spread() {
    let mut h = Harness::new();
    let agents: Vec<Upid> = (0..300)
        .map(|index| pid(&format!("agent@10.0.{}.{}:5051", index / 200, index % 200)))
        .collect();
    for agent in &agents {
        h.register_agent(agent, "cpus:1;mem:64", "");
    }
    let mut pinged: std::collections::BTreeMap<Upid, Vec<u64>> = Default::default();
    let mut most_in_a_tick = 0;
    for second in 1..=30 {
        let out = h.advance(1);
        let mut in_this_tick = 0;
        for command in &out {
            if let Command::ToAgent(to, ToAgent::Ping { sequence }) = command {
                pinged.entry(to.clone()).or_default().push(second);
                in_this_tick += 1;
                h.send(
                    to,
                    ToMaster::Pong {
                        sequence: *sequence,
                    },
                );
            }
        }
        most_in_a_tick = most_in_a_tick.max(in_this_tick);
    }
    assert_eq!(pinged.len(), agents.len(), "every agent pinged");
    for (agent, seconds) in &pinged {
        assert!(
            (1..=15).contains(&seconds[0]),
            "{agent} first at {seconds:?}"
        );
        assert_eq!(seconds.len(), 2, "{agent}: {seconds:?}");
        assert_eq!(seconds[1], seconds[0] + 15, "{agent} keeps its phase");
    }
    // 20 a tick on average; all 300 in one tick before.
    assert!(most_in_a_tick <= 60, "{most_in_a_tick} pings in one tick");
}

/// No input sends more than `ping_slice` pings: those due beyond go in
/// the inputs after the tick, each agent once, before the tick's pass of
/// allocation.
#[test]
fn pings_go_a_slice_an_input() {
    let mut h = Harness::with(Config {
        ping_slice: 7,
        allocation_slice: 4,
        ..Config::default()
    });
    let agents: Vec<Upid> = (0..50)
        .map(|index| pid(&format!("agent@10.0.1.{index}:5051")))
        .collect();
    for agent in &agents {
        h.register_agent(agent, "cpus:1;mem:64", "");
    }
    let scheduler = pid("s@10.0.0.9:4000");
    let (_, out) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    let mut offered = offers_to(&out, &scheduler).len();
    while h.books.work_left() {
        offered += offers_to(&h.input(Input::Continue), &scheduler).len();
    }
    assert_eq!(offered, 50, "every agent offered once");
    // Every agent's first ping is due within 15 s.
    h.now += Duration::from_secs(15);
    let pings = |out: &[Command]| {
        out.iter()
            .filter(|command| matches!(command, Command::ToAgent(_, ToAgent::Ping { .. })))
            .count()
    };
    let mut inputs = vec![pings(&h.input(Input::Tick))];
    while h.books.work_left() {
        let out = h.input(Input::Continue);
        if pings(&out) == 0 {
            break;
        }
        inputs.push(pings(&out));
    }
    assert_eq!(inputs, [7, 7, 7, 7, 7, 7, 7, 1], "{inputs:?}");
    assert!(h.books.allocating(), "the pass comes after the pings");
}

/// The schedule of pings drops what went stale (an agent that
/// registered again, one that is unreachable) as it comes due: it holds
/// about one entry an active agent, however often agents come and go.
#[test]
fn the_schedule_of_pings_forgets_stale_entries() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:1;mem:64", "");
    let silent = pid("silent@10.0.0.2:5051");
    h.register_agent(&silent, "cpus:1;mem:64", "");
    for _ in 0..10 {
        h.now += Duration::from_millis(100);
        let info = AgentInfo {
            id: Some(agent_id.clone()),
            hostname: "h".into(),
            resources: r("cpus:1;mem:64"),
            attributes: Attributes::new(),
        };
        h.send(
            &agent,
            ToMaster::ReregisterAgent {
                info,
                tasks: vec![],
            },
        );
    }
    assert_eq!(h.books.pings.len(), 12, "stale entries wait until due");
    // The silent agent misses its pongs and becomes unreachable; the
    // other answers every ping.
    for _ in 0..100 {
        for command in h.advance(1) {
            if let Command::ToAgent(to, ToAgent::Ping { sequence }) = command
                && to == agent
            {
                h.send(&to, ToMaster::Pong { sequence });
            }
        }
    }
    assert_eq!(h.books.pings.len(), 1, "{:?}", h.books.pings);
    assert!(h.books.pings.iter().all(|(_, id)| id == &agent_id));
}

/// A pass of allocation goes over the agents a slice per input: each
/// agent is offered once a pass, later slices come in `Input::Continue`s
/// until the books say the pass is over, and a framework that subscribes
/// meanwhile makes the pass go round every agent again from where it is.
#[test]
fn allocation_goes_over_the_agents_a_slice_at_a_time() {
    let mut h = Harness::with(Config {
        allocation_slice: 2,
        ..Config::default()
    });
    let agents: Vec<AgentId> = (0..5)
        .map(|index| {
            h.register_agent(
                &pid(&format!("agent@10.0.0.{index}:5051")),
                "cpus:1;mem:64",
                "",
            )
        })
        .collect();
    assert!(
        !h.books.allocating(),
        "registrations allocate their own agent"
    );
    let first = pid("s1@10.0.1.1:4000");
    let (_, out) = h.subscribe(&first, FrameworkInfo::new("f1", "u"), vec![]);
    let mut offered: Vec<AgentId> = offers_to(&out, &first)
        .into_iter()
        .map(|offer| offer.agent_id)
        .collect();
    assert_eq!(offered.len(), 2, "one slice");
    assert!(h.books.allocating());
    let out = h.input(Input::Continue);
    offered.extend(
        offers_to(&out, &first)
            .into_iter()
            .map(|offer| offer.agent_id),
    );
    assert_eq!(offered.len(), 4);
    // A second framework: the pass goes round again, from the fifth.
    let second = pid("s2@10.0.1.1:4000");
    let (_, out) = h.subscribe(&second, FrameworkInfo::new("f2", "u"), vec![]);
    let to_second = offers_to(&out, &second);
    assert_eq!(to_second.len(), 1, "the others are offered already");
    assert_eq!(
        to_second[0].agent_id, agents[4],
        "the last agent came first"
    );
    offered.push(to_second[0].agent_id.clone());
    let mut sorted = offered.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), agents.len(), "each agent once: {offered:?}");
    let mut slices = 1;
    while h.books.allocating() {
        h.input(Input::Continue);
        slices += 1;
        assert!(slices <= 3, "five agents in slices of two");
    }
    assert_eq!(slices, 3);
    assert!(
        h.input(Input::Continue).is_empty(),
        "nothing once the pass is over"
    );
    // A tick starts a pass and leaves its slices to the inputs after
    // it; a tick during the pass lets it go on to its end.
    assert!(h.input(Input::Tick).is_empty(), "pings are not due yet");
    assert!(h.books.allocating());
    h.input(Input::Continue);
    h.input(Input::Continue);
    h.now += Duration::from_secs(1);
    h.input(Input::Tick);
    h.input(Input::Continue);
    assert!(!h.books.allocating(), "one pass of three slices");
    assert!(h.input(Input::Continue).is_empty());
}

/// When so much changed that the books say every framework did (more
/// changed keys than they keep), the views start anew and list every
/// task again, not only those that changed.
#[test]
fn views_made_anew_list_every_task() {
    let mut h = Harness::new();
    let agent_id = h.register_agent(&pid("agent@10.0.0.1:5051"), "cpus:4;mem:4096", "");
    let scheduler = pid("scheduler-1@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    let offers = offers_to(&out, &scheduler);
    h.send(
        &scheduler,
        accept(
            &framework_id,
            &[&offers[0]],
            vec![task("t1", &agent_id, "cpus:1;mem:64")],
            0,
        ),
    );
    // A map made again counts every key as changed.
    h.books.frameworks = h
        .books
        .frameworks
        .iter()
        .map(|(id, entry)| (id.clone(), entry.clone()))
        .collect();
    h.check();
    let state = crate::state::snapshot(&h.books, "m", 0, 0);
    assert_eq!(state.tasks.len(), 1);
}

/// An agent's view made again because its offers changed shares what
/// did not change (process id, hostname, attributes, total) with the
/// view before; what the agent changes by registering again is shown
/// anew (the harness also checks each step against a snapshot made of
/// everything).
#[test]
fn agent_views_share_what_did_not_change() {
    use std::sync::Arc;
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "rack:r1");
    let before = h.views.refresh(&mut h.books, "m", 0, 0);
    let scheduler = pid("scheduler-1@10.0.0.9:4000");
    let (_, out) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    assert_eq!(offers_to(&out, &scheduler).len(), 1);
    let after = h.views.refresh(&mut h.books, "m", 0, 0);
    let (was, is) = (
        before.agents.get(&agent_id).unwrap(),
        after.agents.get(&agent_id).unwrap(),
    );
    assert_ne!(
        was.offered, is.offered,
        "the offer is in the view made again"
    );
    assert!(Arc::ptr_eq(&was.pid, &is.pid));
    assert!(Arc::ptr_eq(&was.hostname, &is.hostname));
    assert!(Arc::ptr_eq(&was.attributes, &is.attributes));
    assert!(Arc::ptr_eq(&was.total, &is.total));

    let mut info = returning_agent(&agent_id, "cpus:8;mem:4096");
    info.hostname = "elsewhere".to_owned();
    info.attributes = "rack:r2".parse().unwrap();
    let identity = default_identity(&agent);
    h.send_as(
        &agent,
        identity,
        ToMaster::ReregisterAgent {
            info,
            tasks: vec![],
        },
    );
    let again = h.views.refresh(&mut h.books, "m", 0, 0);
    let view = again.agents.get(&agent_id).unwrap();
    assert_eq!(*view.total, r("cpus:8;mem:4096"));
    assert_eq!(&*view.hostname, "elsewhere");
    assert_eq!(view.attributes.to_string(), "rack:r2");
    assert_eq!(&*view.pid, "agent@10.0.0.1:5051");
}

/// A view replaced while a snapshot shows it is left for the views to
/// free (on the master's thread), not to whichever thread drops the last
/// snapshot, and they free it once no snapshot shows it; one that no
/// snapshot showed is freed at once, and one a reader keeps is left to
/// that reader after a few snapshots.
#[test]
fn replaced_views_are_freed_by_the_views_once_no_snapshot_shows_them() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    h.register_agent(&agent, "cpus:4;mem:4096", "");
    let shown = h.views.refresh(&mut h.books, "m", 0, 0);
    assert_eq!(h.views.replaced_waiting(), 0);
    // Offered: the agent's view is made again while `shown` shows it.
    let scheduler = pid("scheduler-1@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    let offers = offers_to(&out, &scheduler);
    let second = h.views.refresh(&mut h.books, "m", 0, 0);
    assert_eq!(h.views.replaced_waiting(), 1, "the agent's view shown");
    drop(shown);
    assert_eq!(
        h.views.replaced_waiting(),
        1,
        "the views hold it, not the dropped snapshot"
    );
    // Declined: the agent's and the framework's views again and the
    // offer's taken out, all shown by `second`; the first is freed, as
    // nothing shows it now.
    let decline = |h: &mut Harness, offer: &Offer| {
        h.send(
            &scheduler,
            ToMaster::Decline {
                framework_id: framework_id.clone(),
                offer_ids: vec![offer.id.clone()],
                filters: Filters::default(),
            },
        );
    };
    decline(&mut h, &offers[0]);
    assert_eq!(h.views.replaced_waiting(), 3);
    drop(second);
    h.views.update(&mut h.books);
    assert_eq!(
        h.views.replaced_waiting(),
        0,
        "freed once nothing shows them"
    );

    // A snapshot kept for good (a reader that never lets go) holds on
    // to the views it shows, not the views to all replaced after, while
    // the latest snapshot is published (held until the next), as the
    // master does.
    let kept = h.views.refresh(&mut h.books, "m", 0, 0);
    let mut latest = h.views.refresh(&mut h.books, "m", 0, 0);
    let mut most = 0;
    for _ in 0..10 {
        // Past the decline's refusal (5 s), within the agent's silence
        // allowed (75 s in all).
        let out = h.advance(6);
        let offers = offers_to(&out, &scheduler);
        assert_eq!(offers.len(), 1);
        decline(&mut h, &offers[0]);
        latest = h.views.refresh(&mut h.books, "m", 0, 0);
        most = most.max(h.views.replaced_waiting());
    }
    drop(latest);
    assert!(most <= 8, "{most} views waiting");
    assert_eq!(kept.agents.len(), 1, "the kept snapshot still reads");
}

/// A small deterministic generator, so random runs replay.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

/// Random accepts, declines, launches, finishes, kills, agent losses and
/// returns, task ids used again and frameworks torn down (a slice an
/// input) never break the invariants, nor make the snapshot made of
/// changes differ from one made of everything (checked after every step
/// by the harness, with the views redone a few at a time after each
/// input and compared whenever they are up to date).
#[test]
fn random_operations_never_break_the_invariants() {
    for seed in 0..40 {
        let mut random = SplitMix(seed);
        let mut h = Harness::with(Config {
            agent_ping_timeout: Duration::from_secs(2),
            max_missed_pongs: 2,
            completed_tasks_kept: 4,
            // Removals go on over inputs, other operations between.
            removal_slice: 1,
            ..Config::default()
        });
        h.views_slice = Some(1 + seed as usize % 4);
        let agents: Vec<Upid> = (0..4)
            .map(|index| pid(&format!("agent@10.0.0.{index}:5051")))
            .collect();
        let schedulers: Vec<Upid> = (0..3)
            .map(|index| pid(&format!("s{index}@10.0.1.1:4000")))
            .collect();
        let mut agent_ids: Vec<Option<AgentId>> = vec![None; agents.len()];
        let mut framework_ids: Vec<Option<FrameworkId>> = vec![None; schedulers.len()];
        let mut offers: Vec<(usize, Offer)> = Vec::new();
        let mut launched: Vec<(usize, usize, String)> = Vec::new();
        let mut next_task = 0;
        for _step in 0..400 {
            let out = match random.below(9) {
                0 => {
                    let index = random.below(agents.len());
                    if agent_ids[index].is_none() {
                        agent_ids[index] = Some(h.register_agent(
                            &agents[index],
                            "cpus:4;mem:4096;ports:[100-110]",
                            "rack:r1",
                        ));
                    }
                    Vec::new()
                }
                1 => {
                    let index = random.below(schedulers.len());
                    let mut info = FrameworkInfo::new(format!("f{index}"), "u");
                    info.id = framework_ids[index].clone();
                    if random.below(2) == 0 {
                        info.capabilities.insert(Capability::PartitionAware);
                    }
                    let (id, out) = h.subscribe(&schedulers[index], info, vec![]);
                    framework_ids[index] = Some(id);
                    out
                }
                2 | 3 if !offers.is_empty() => {
                    let (scheduler, offer) = offers.swap_remove(random.below(offers.len()));
                    let Some(framework_id) = framework_ids[scheduler].clone() else {
                        continue;
                    };
                    let mut tasks = Vec::new();
                    for _ in 0..random.below(3) {
                        next_task += 1;
                        let spec = [
                            "cpus:1;mem:512",
                            "cpus:0.5;mem:256;ports:[100-101]",
                            "cpus:9",
                            "mem:100",
                        ][random.below(4)];
                        // Now and then an id used before.
                        let id = if random.below(4) == 0 {
                            format!("t{}", random.below(next_task))
                        } else {
                            format!("t{next_task}")
                        };
                        tasks.push(task(&id, &offer.agent_id, spec));
                        let agent_index = agent_ids
                            .iter()
                            .position(|a| a.as_ref() == Some(&offer.agent_id))
                            .unwrap_or(0);
                        launched.push((scheduler, agent_index, id));
                    }
                    h.send(
                        &schedulers[scheduler],
                        accept(&framework_id, &[&offer], tasks, random.below(3) as u64),
                    )
                }
                4 if !offers.is_empty() => {
                    let (scheduler, offer) = offers.swap_remove(random.below(offers.len()));
                    let Some(framework_id) = framework_ids[scheduler].clone() else {
                        continue;
                    };
                    if random.below(2) == 0 {
                        // The offer could not be sent to the scheduler.
                        h.input(Input::OffersNotSent {
                            to: schedulers[scheduler].clone(),
                            offers: vec![offer.id],
                        })
                    } else {
                        h.send(
                            &schedulers[scheduler],
                            ToMaster::Decline {
                                framework_id,
                                offer_ids: vec![offer.id],
                                filters: Filters::default(),
                            },
                        )
                    }
                }
                5 if !launched.is_empty() => {
                    let (scheduler, agent, id) = launched[random.below(launched.len())].clone();
                    let Some(framework_id) = framework_ids[scheduler].clone() else {
                        continue;
                    };
                    let state = [
                        TaskState::Running,
                        TaskState::Finished,
                        TaskState::Failed,
                        TaskState::Starting,
                    ][random.below(4)];
                    h.finish(&agents[agent], &framework_id, &id, state)
                }
                6 => {
                    // Time passes; agents answer pings only sometimes.
                    let out = h.advance(1 + random.below(3) as u64);
                    for command in &out {
                        if let Command::ToAgent(to, ToAgent::Ping { sequence }) = command
                            && random.below(3) != 0
                        {
                            h.send(
                                to,
                                ToMaster::Pong {
                                    sequence: *sequence,
                                },
                            );
                        }
                    }
                    out
                }
                7 => {
                    // An agent that was lost comes back with what it runs.
                    let index = random.below(agents.len());
                    let Some(agent_id) = agent_ids[index].clone() else {
                        continue;
                    };
                    let tasks: Vec<Task> = h
                        .books
                        .frameworks()
                        .values()
                        .flat_map(|framework| framework.tasks.values())
                        .filter(|task| task.info.agent_id == agent_id)
                        .cloned()
                        .collect();
                    let info = AgentInfo {
                        id: Some(agent_id),
                        hostname: "h".into(),
                        resources: r("cpus:4;mem:4096;ports:[100-110]"),
                        attributes: Attributes::new(),
                    };
                    offers.retain(|(_, offer)| Some(&offer.agent_id) != agent_ids[index].as_ref());
                    h.send(&agents[index], ToMaster::ReregisterAgent { info, tasks })
                }
                8 if random.below(8) == 0 => {
                    // A framework tears itself down; it subscribes anew.
                    let index = random.below(schedulers.len());
                    let Some(framework_id) = framework_ids[index].take() else {
                        continue;
                    };
                    offers.retain(|(scheduler, _)| *scheduler != index);
                    launched.retain(|(scheduler, _, _)| *scheduler != index);
                    h.send(&schedulers[index], ToMaster::Teardown { framework_id })
                }
                _ if !launched.is_empty() => {
                    let (scheduler, _, id) = launched[random.below(launched.len())].clone();
                    let Some(framework_id) = framework_ids[scheduler].clone() else {
                        continue;
                    };
                    h.send(
                        &schedulers[scheduler],
                        ToMaster::Kill {
                            framework_id,
                            task_id: TaskId::new(id).unwrap(),
                        },
                    )
                }
                _ => Vec::new(),
            };
            for (index, scheduler) in schedulers.iter().enumerate() {
                offers.extend(
                    offers_to(&out, scheduler)
                        .into_iter()
                        .map(|offer| (index, offer)),
                );
            }
            for command in &out {
                if let Command::ToScheduler(_, ToScheduler::OfferRescinded { offer_id }) = command {
                    offers.retain(|(_, offer)| &offer.id != offer_id);
                }
            }
            offers.retain(|(_, offer)| h.books.offers().contains_key(&offer.id));
        }
        // Up to date after slices alone now and then, and compared at the
        // end.
        assert!(
            h.compared > h.checked / 8,
            "seed {seed}: compared {} times in {}",
            h.compared,
            h.checked
        );
        h.views_slice = None;
        h.check();
    }
}

/// A master restarted from its registry: agents and frameworks come back
/// under a higher epoch; an agent that re-registers keeps its tasks (none
/// is killed); reconciliation leaves unknown tasks unanswered while agents
/// may still return; one that never returns is unreachable after the
/// re-registration timeout, and the registry says so.
#[test]
fn a_restarted_master_recovers_its_registry() {
    let config = Config {
        agent_reregister_timeout: Duration::from_secs(30),
        ..Config::default()
    };
    let mut h = Harness::with(config.clone());
    let (agent, straggler) = (pid("agent@10.0.0.1:5051"), pid("agent@10.0.0.2:5051"));
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
    let straggler_id = h.register_agent(&straggler, "cpus:4;mem:4096", "");
    let scheduler = pid("scheduler-1@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("fw", "u"), vec![]);
    let offer = offers_to(&out, &scheduler)
        .into_iter()
        .find(|offer| offer.agent_id == agent_id)
        .unwrap();
    let launched = task("t1", &agent_id, "cpus:1;mem:128");
    h.send(
        &scheduler,
        accept(&framework_id, &[&offer], vec![launched.clone()], 5),
    );
    let registry = h.books.registry();
    assert_eq!(registry.agents.len(), 2);
    assert_eq!(registry.frameworks.len(), 1);

    let mut restarted = Harness::with(config);
    let epoch = h.books.master_epoch() + 1;
    restarted.books.recover(restarted.now, registry, epoch);
    assert!(restarted.books.recovering());
    // The scheduler comes back first and asks about its task.
    let mut info = FrameworkInfo::new("fw", "u");
    info.id = Some(framework_id.clone());
    let new_scheduler = pid("scheduler-1@10.0.0.9:4001");
    let out = restarted.send(
        &new_scheduler,
        ToMaster::Subscribe {
            info,
            constraints: vec![],
        },
    );
    assert!(out.iter().any(|command| matches!(command,
        Command::ToScheduler(_, ToScheduler::Subscribed { epoch: said, .. }) if *said == epoch)));
    let out = restarted.send(
        &new_scheduler,
        ToMaster::Reconcile {
            framework_id: framework_id.clone(),
            tasks: vec![strata_protocol::ReconcileTask {
                task_id: launched.task_id.clone(),
                agent_id: None,
            }],
        },
    );
    assert!(
        updates_to(&out, &new_scheduler).is_empty(),
        "no LOST while agents may return"
    );
    // The agent returns with its task: it is kept, and known again.
    let out = restarted.send(
        &agent,
        ToMaster::ReregisterAgent {
            info: AgentInfo {
                id: Some(agent_id.clone()),
                hostname: "10.0.0.1".into(),
                resources: r("cpus:4;mem:4096"),
                attributes: Default::default(),
            },
            tasks: vec![
                Task {
                    info: launched.clone(),
                    framework_id: framework_id.clone(),
                    state: TaskState::Running,
                    status: None,
                },
                // One ended while the master was down, its update not yet
                // acknowledged.
                Task {
                    info: task("t0", &agent_id, "cpus:1;mem:128"),
                    framework_id: framework_id.clone(),
                    state: TaskState::Finished,
                    status: None,
                },
            ],
        },
    );
    assert!(!out.iter().any(|command| matches!(
        command,
        Command::ToAgent(
            _,
            ToAgent::KillTask { .. } | ToAgent::ShutdownFramework { .. }
        )
    )));
    assert!(out.iter().any(|command| matches!(command,
        Command::ToAgent(_, ToAgent::AgentReregistered { epoch: said, .. }) if *said == epoch)));
    assert!(
        restarted.books.frameworks()[&framework_id]
            .tasks
            .contains_key(&launched.task_id)
    );
    assert!(restarted.books.recovering(), "the straggler may still come");
    restarted.advance(31);
    assert!(!restarted.books.recovering());
    let registry = restarted.books.registry();
    let unreachable: Vec<_> = registry
        .agents
        .iter()
        .filter(|agent| agent.unreachable)
        .filter_map(|agent| agent.info.id.clone())
        .collect();
    assert_eq!(unreachable, vec![straggler_id]);
    // The task that ended is known as ended, not lost.
    let out = restarted.send(
        &new_scheduler,
        ToMaster::Reconcile {
            framework_id: framework_id.clone(),
            tasks: vec![strata_protocol::ReconcileTask {
                task_id: TaskId::new("t0").unwrap(),
                agent_id: None,
            }],
        },
    );
    let answers = updates_to(&out, &new_scheduler);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].state, TaskState::Finished);
}

/// A restarted agent offering less than its tasks hold is refused, with
/// what they hold in the reason.
#[test]
fn an_agent_that_shrank_below_its_tasks_is_refused() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
    let out = h.send(
        &agent,
        ToMaster::ReregisterAgent {
            info: AgentInfo {
                id: Some(agent_id.clone()),
                hostname: "10.0.0.1".into(),
                resources: r("cpus:1;mem:4096"),
                attributes: Default::default(),
            },
            tasks: vec![Task {
                info: task("t1", &agent_id, "cpus:2;mem:128"),
                framework_id: FrameworkId::new("f").unwrap(),
                state: TaskState::Running,
                status: None,
            }],
        },
    );
    assert!(out.iter().any(|command| matches!(command,
        Command::ToAgent(_, ToAgent::RegistrationRefused { reason })
            if reason.contains("tasks hold cpus:2;mem:128"))));
}
