//! ACLs enforced by the books: register_frameworks on subscription,
//! run_tasks on launch, and the refusals counted for the metrics.

use super::*;
use crate::authorization::{Authorizer, DefaultDecision};

fn harness(acls: &str, default: DefaultDecision) -> Harness {
    let acls = acls.parse().expect("test acls parse");
    Harness::with(Config {
        authorizer: Authorizer::new(acls, default),
        ..Config::default()
    })
}

/// Subscribes as a framework certificate for `principal`: the framework
/// id, or the error the scheduler was sent.
fn subscribe_as(
    h: &mut Harness,
    scheduler: &Upid,
    principal: &str,
    info: FrameworkInfo,
) -> (Result<FrameworkId, String>, Vec<Command>) {
    let out = h.send_as(
        scheduler,
        PeerIdentity::simulated(Some(Role::Framework), principal),
        ToMaster::Subscribe {
            info,
            constraints: vec![],
        },
    );
    let subscribed = out.iter().find_map(|command| match command {
        Command::ToScheduler(to, ToScheduler::Subscribed { framework_id, .. })
            if to == scheduler =>
        {
            Some(Ok(framework_id.clone()))
        }
        Command::ToScheduler(to, ToScheduler::Error { message }) if to == scheduler => {
            Some(Err(message.clone()))
        }
        _ => None,
    });
    (subscribed.expect("subscribed or refused"), out)
}

fn in_roles(roles: &[&str]) -> FrameworkInfo {
    let mut info = FrameworkInfo::new("fw", "u");
    info.roles = roles.iter().map(|role| (*role).to_owned()).collect();
    info
}

fn launches(out: &[Command]) -> usize {
    out.iter()
        .filter(|command| matches!(command, Command::ToAgent(_, ToAgent::RunTask { .. })))
        .count()
}

/// Only ops registers in `admin`; anyone else in any other role.
const ADMIN_FOR_OPS: &str = r#"{"register_frameworks": [
    {"principals": {"values": ["ops"]}, "roles": {"values": ["admin"]}},
    {"principals": {"type": "NONE"}, "roles": {"values": ["admin"]}}
]}"#;

#[test]
fn an_acl_that_denies_a_role_refuses_the_subscription() {
    let mut h = harness(ADMIN_FOR_OPS, DefaultDecision::Allow);
    let alice = pid("scheduler-a@10.0.0.9:4000");
    let (refused, out) = subscribe_as(&mut h, &alice, "alice", in_roles(&["admin"]));
    let message = refused.expect_err("alice may not register in admin");
    assert_eq!(
        message,
        r#"principal "alice" may not register a framework in role "admin": register_frameworks rule 2 (principals NONE, roles ["admin"])"#
    );
    assert!(out.iter().any(|command| matches!(
        command,
        Command::Log(super::super::Event::RequestRefused { .. })
    )));
    assert!(h.books.frameworks().is_empty());
    // Every role must be allowed, not only the first.
    let (refused, _) = subscribe_as(&mut h, &alice, "alice", in_roles(&["dev", "admin"]));
    assert!(refused.is_err_and(|message| message.contains("rule 2")));
    assert!(h.books.frameworks().is_empty());
    assert_eq!(h.books.denied(), 2);
    // What no rule names is left to the default, allow.
    let (subscribed, _) = subscribe_as(&mut h, &alice, "alice", in_roles(&["dev"]));
    assert!(subscribed.is_ok());
    // The first rule lets ops in.
    let ops = pid("scheduler-o@10.0.0.10:4000");
    let (subscribed, _) = subscribe_as(&mut h, &ops, "ops", in_roles(&["admin"]));
    let framework_id = subscribed.expect("ops registers in admin");
    assert_eq!(h.books.frameworks()[&framework_id].info.role(), "admin");
    assert_eq!(h.books.denied(), 2);
}

#[test]
fn what_no_rule_names_is_decided_by_the_file_then_the_default() {
    let only_alice = r#"{"register_frameworks": [
        {"principals": {"values": ["alice"]}, "roles": {"type": "ANY"}}
    ]}"#;
    let strict_file = r#"{"permissive": false, "register_frameworks": [
        {"principals": {"values": ["alice"]}, "roles": {"type": "ANY"}}
    ]}"#;
    let lenient_file = r#"{"permissive": true}"#;
    let unmatched = r#"principal "bob" may not register a framework in role "*": no register_frameworks rule matched and the default is deny"#;
    let cases: &[(&str, DefaultDecision, Option<&str>)] = &[
        (only_alice, DefaultDecision::Allow, None),
        (only_alice, DefaultDecision::Deny, Some(unmatched)),
        (strict_file, DefaultDecision::Allow, Some(unmatched)),
        (lenient_file, DefaultDecision::Deny, None),
        ("{}", DefaultDecision::Deny, Some(unmatched)),
    ];
    for (acls, default, expected) in cases {
        let mut h = harness(acls, *default);
        let alice = pid("scheduler-a@10.0.0.9:4000");
        let (subscribed, _) = subscribe_as(&mut h, &alice, "alice", FrameworkInfo::new("a", "u"));
        assert_eq!(
            subscribed.is_ok(),
            *acls != "{}",
            "alice under {acls} and {default}"
        );
        let bob = pid("scheduler-b@10.0.0.10:4000");
        let (subscribed, _) = subscribe_as(&mut h, &bob, "bob", FrameworkInfo::new("b", "u"));
        assert_eq!(
            subscribed.err().as_deref(),
            *expected,
            "bob under {acls} and {default}"
        );
    }
}

/// Nobody runs tasks as root; anything else is allowed.
const NO_ROOT: &str = r#"{"run_tasks": [
    {"principals": {"type": "ANY"}, "users": {"values": ["nobody"]}},
    {"principals": {"type": "NONE"}, "users": {"values": ["root"]}}
]}"#;

#[test]
fn a_task_run_tasks_denies_is_answered_with_the_rule_and_not_launched() {
    let mut h = harness(NO_ROOT, DefaultDecision::Allow);
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
    let scheduler = pid("scheduler-a@10.0.0.9:4000");
    let (subscribed, out) = subscribe_as(
        &mut h,
        &scheduler,
        "alice",
        FrameworkInfo::new("fw", "root"),
    );
    let framework_id = subscribed.expect("alice registers");
    let offer = offers_to(&out, &scheduler).remove(0);
    let out = h.send(
        &scheduler,
        accept(
            &framework_id,
            &[&offer],
            vec![
                task("t1", &agent_id, "cpus:1;mem:128"),
                task("t2", &agent_id, "cpus:1;mem:128"),
            ],
            5,
        ),
    );
    assert_eq!(launches(&out), 0, "{out:#?}");
    let updates = updates_to(&out, &scheduler);
    assert_eq!(updates.len(), 2);
    for update in &updates {
        assert_eq!(update.state, TaskState::Error);
        assert_eq!(
            update.reason,
            Some(strata_protocol::Reason::TaskUnauthorized)
        );
        assert_eq!(
            update.message,
            r#"principal "alice" may not run tasks as user "root": run_tasks rule 2 (principals NONE, users ["root"])"#
        );
    }
    assert!(h.books.frameworks()[&framework_id].tasks.is_empty());
    assert!(h.books.agents()[&agent_id].tasks.is_empty());
    assert_eq!(h.books.denied(), 2);
    // What the offer held returns; nothing stays charged to the framework.
    assert_eq!(offered_or_free(&h, &agent_id), r("cpus:4;mem:4096"));

    // Another framework of the same principal, running as nobody, launches.
    let other = pid("scheduler-b@10.0.0.10:4000");
    let (subscribed, _) = subscribe_as(&mut h, &other, "alice", FrameworkInfo::new("fw", "nobody"));
    let framework_id = subscribed.expect("alice registers again");
    h.advance(1);
    let offer = h
        .books
        .offers()
        .values()
        .find(|entry| entry.offer.framework_id == framework_id)
        .map(|entry| entry.offer.clone())
        .expect("offered");
    let out = h.send(
        &other,
        accept(
            &framework_id,
            &[&offer],
            vec![task("t1", &agent_id, "cpus:1;mem:128")],
            5,
        ),
    );
    assert_eq!(launches(&out), 1, "{out:#?}");
    assert_eq!(h.books.denied(), 2);
}

#[test]
fn denials_reach_the_metrics() {
    let mut h = harness(ADMIN_FOR_OPS, DefaultDecision::Allow);
    let alice = pid("scheduler-a@10.0.0.9:4000");
    let (refused, _) = subscribe_as(&mut h, &alice, "alice", in_roles(&["admin"]));
    assert!(refused.is_err());
    // A refusal for the certificate's role counts too.
    h.send_as(
        &alice,
        PeerIdentity::simulated(Some(Role::Executor), "alice"),
        ToMaster::Subscribe {
            info: FrameworkInfo::new("fw", "u"),
            constraints: vec![],
        },
    );
    assert_eq!(h.books.authorizer().acls().register_frameworks.len(), 2);
    let state = crate::state::snapshot(&h.books, "master@10.0.0.1:5050", 0, 0);
    assert_eq!(state.authorization_denials, 2);
    let metrics = crate::metrics::metrics(&state);
    assert!(metrics.contains(&strata_api::metrics::Metric::counter(
        "master/authorization_denials",
        2.0
    )));
    let text = strata_api::metrics::prometheus(&metrics);
    assert!(
        text.contains("# TYPE strata_master_authorization_denials_total counter\n")
            && text.contains("\nstrata_master_authorization_denials_total 2\n"),
        "{text}"
    );
}

#[test]
fn a_task_is_authorized_as_the_user_its_command_names() {
    let as_user = |user: Option<&str>| CommandInfo {
        user: user.map(str::to_owned),
        ..CommandInfo::shell("true")
    };
    let on_executor = |user: Option<&str>| {
        TaskKind::Executor(strata_protocol::ExecutorInfo {
            executor_id: strata_protocol::ExecutorId::new("e1").unwrap(),
            name: "e1".into(),
            command: as_user(user),
            resources: r("cpus:1;mem:128"),
        })
    };
    // The framework's user, the task's kind, and whether it launches.
    let cases = [
        ("nobody", TaskKind::Command(as_user(Some("root"))), false),
        ("root", TaskKind::Command(as_user(Some("nobody"))), true),
        ("root", TaskKind::Command(as_user(None)), false),
        ("nobody", on_executor(Some("root")), false),
        ("root", on_executor(Some("nobody")), true),
    ];
    for (framework_user, kind, launched) in cases {
        let mut h = harness(NO_ROOT, DefaultDecision::Allow);
        let agent = pid("agent@10.0.0.1:5051");
        let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
        let scheduler = pid("scheduler-a@10.0.0.9:4000");
        let info = FrameworkInfo::new("fw", framework_user);
        let (subscribed, out) = subscribe_as(&mut h, &scheduler, "alice", info);
        let framework_id = subscribed.expect("alice registers");
        let offer = offers_to(&out, &scheduler).remove(0);
        let launch = TaskInfo {
            kind: kind.clone(),
            ..task("t1", &agent_id, "cpus:1;mem:128")
        };
        let out = h.send(
            &scheduler,
            accept(&framework_id, &[&offer], vec![launch], 5),
        );
        assert_eq!(
            launches(&out) == 1,
            launched,
            "{framework_user} running {kind:?}: {out:#?}"
        );
        assert_eq!(h.books.denied(), u64::from(!launched));
        if !launched {
            let message = updates_to(&out, &scheduler).remove(0).message;
            assert!(
                message.contains(r#"as user "root""#) && message.contains("run_tasks rule 2"),
                "{message}"
            );
        }
    }
}

/// `/state` shows each reader only what view_frameworks and view_tasks
/// let its principal see.
#[test]
fn views_show_what_the_view_acls_allow() {
    let mut h = Harness::new();
    let first_agent = h.register_agent(&pid("agent@10.0.0.1:5051"), "cpus:4;mem:4096", "");
    let alice = pid("s@10.0.0.9:4000");
    let (alice_id, out) = h.subscribe(&alice, FrameworkInfo::new("fw", "alice"), vec![]);
    let offer = offers_to(&out, &alice).remove(0);
    let launched = task("t-alice", &first_agent, "cpus:1;mem:64");
    h.send(&alice, accept(&alice_id, &[&offer], vec![launched], 0));
    // Bob is subscribed first, so the next agent is offered to him.
    let bob = pid("s@10.0.0.9:4001");
    let (bob_id, _) = h.subscribe(&bob, FrameworkInfo::new("fw", "bob"), vec![]);
    let second = pid("agent@10.0.0.2:5051");
    let info = AgentInfo {
        id: None,
        hostname: "h2".into(),
        resources: r("cpus:4;mem:4096"),
        attributes: Default::default(),
    };
    let out = h.send_as(
        &second,
        PeerIdentity::simulated(Some(Role::Agent), "h2"),
        ToMaster::RegisterAgent { info },
    );
    let offer = offers_to(&out, &bob).remove(0);
    let launched = task("t-bob", &offer.agent_id, "cpus:1;mem:64");
    h.send(&bob, accept(&bob_id, &[&offer], vec![launched], 0));
    let state = crate::state::snapshot(&h.books, "master@10.0.0.1:5050", 0, 0);
    assert_eq!((state.frameworks.len(), state.tasks.len()), (2, 2));
    let acls = r#"{"permissive": false,
        "view_frameworks": [{"principals": {"values": ["ops"]}, "users": {"type": "ANY"}},
                            {"principals": {"values": ["alice-team"]}, "users": {"values": ["alice"]}}],
        "view_tasks": [{"principals": {"values": ["ops"]}, "users": {"type": "ANY"}},
                       {"principals": {"values": ["alice-team"]}, "users": {"values": ["alice"]}}]}"#;
    let authorizer = Authorizer::new(acls.parse().unwrap(), DefaultDecision::Allow);
    let seen = |principal: Option<&str>| {
        let visible = crate::state::visible_to(&state, &authorizer, principal);
        let mut users: Vec<String> = visible.frameworks.iter().map(|f| f.user.clone()).collect();
        users.extend(visible.tasks.iter().map(|t| format!("task of {}", t.user)));
        users
    };
    assert_eq!(seen(Some("ops")).len(), 4);
    assert_eq!(seen(Some("alice-team")), ["alice", "task of alice"]);
    assert!(seen(Some("mallory")).is_empty());
    assert!(seen(None).is_empty());
    assert!(Authorizer::default().allows_everything());
    assert!(!authorizer.allows_everything());
}
