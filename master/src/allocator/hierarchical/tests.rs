//! The allocator's behaviour, driven as the master drives it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use strata_protocol::{AgentId, Attributes, FrameworkId, OfferConstraint, Resources};

use super::HierarchicalAllocator;
use crate::allocator::{Allocation, Allocator, Policy};

fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

fn framework(name: &str) -> FrameworkId {
    FrameworkId::new(name).unwrap()
}

fn r(text: &str) -> Resources {
    text.parse().unwrap()
}

fn add_agents(
    allocator: &mut HierarchicalAllocator,
    count: usize,
    resources: &str,
) -> Vec<AgentId> {
    (0..count)
        .map(|index| {
            let id = agent(&format!("agent-{index:03}"));
            allocator.add_agent(id.clone(), r(resources), Attributes::new(), &[]);
            id
        })
        .collect()
}

/// Who got how many allocations.
fn counts(allocations: &[Allocation]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for allocation in allocations {
        *counts
            .entry(allocation.framework_id.to_string())
            .or_default() += 1;
    }
    counts
}

/// The DRF paper's example (Ghodsi et al., 2011): 9 CPUs and 18 GB; A's
/// tasks need ⟨1 CPU, 4 GB⟩ and B's ⟨3 CPU, 1 GB⟩. Offered in turn, each
/// framework launches one task per offer and returns the rest; one that
/// cannot fit a task declines for good. A runs 3 tasks, B 2.
#[test]
fn drf_paper_example() {
    let start = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    let node = agent("node");
    allocator.add_agent(node.clone(), r("cpus:9;mem:18432"), Attributes::new(), &[]);
    let task = BTreeMap::from([
        (framework("a"), r("cpus:1;mem:4096")),
        (framework("b"), r("cpus:3;mem:1024")),
    ]);
    for id in task.keys() {
        allocator.add_framework(id.clone(), "*".into());
    }
    let mut launched: BTreeMap<FrameworkId, usize> = BTreeMap::new();
    for _round in 0..100 {
        let allocations = allocator.allocate(start);
        if allocations.is_empty() {
            break;
        }
        for offer in allocations {
            let need = &task[&offer.framework_id];
            match offer.resources.checked_sub(need) {
                Some(rest) => {
                    *launched.entry(offer.framework_id.clone()).or_default() += 1;
                    allocator.recover(&offer.framework_id, &offer.agent_id, &rest, None, start);
                }
                None => allocator.recover(
                    &offer.framework_id,
                    &offer.agent_id,
                    &offer.resources,
                    Some(Duration::from_secs(3600)),
                    start,
                ),
            }
        }
    }
    assert_eq!(launched[&framework("a")], 3);
    assert_eq!(launched[&framework("b")], 2);
    let share_a = allocator.share(&framework("a")).unwrap();
    let share_b = allocator.share(&framework("b")).unwrap();
    assert!((share_a - 2.0 / 3.0).abs() < 1e-9, "{share_a}");
    assert!((share_b - 2.0 / 3.0).abs() < 1e-9, "{share_b}");
}

/// The seeds' walk-through, as the allocator sees it: framework 1 is
/// offered the whole agent, uses ⟨2 CPU, 1 GB⟩ and ⟨1 CPU, 2 GB⟩, and the
/// rest goes to framework 2; what tasks free is offered again.
#[test]
fn seed_walkthrough() {
    let now = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    let node = agent("agent-1");
    allocator.add_agent(node.clone(), r("cpus:4;mem:4096"), Attributes::new(), &[]);
    allocator.add_framework(framework("fw1"), "*".into());
    let first = allocator.allocate(now);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].framework_id, framework("fw1"));
    assert_eq!(first[0].resources, r("cpus:4;mem:4096"));

    allocator.add_framework(framework("fw2"), "*".into());
    let used = r("cpus:3;mem:3072");
    let rest = first[0].resources.checked_sub(&used).unwrap();
    allocator.recover(&framework("fw1"), &node, &rest, None, now);
    let second = allocator.allocate(now);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].framework_id, framework("fw2"));
    assert_eq!(second[0].resources, r("cpus:1;mem:1024"));

    // fw2 declines; fw1's tasks finish and everything is offered again.
    allocator.recover(
        &framework("fw2"),
        &node,
        &second[0].resources,
        Some(Duration::from_secs(5)),
        now,
    );
    allocator.recover(&framework("fw1"), &node, &used, None, now);
    let third = allocator.allocate(now);
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].framework_id, framework("fw1"));
    assert_eq!(third[0].resources, r("cpus:4;mem:4096"));
}

#[test]
fn a_decline_keeps_the_agent_away_for_the_refusal() {
    let start = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    let node = agent("a");
    allocator.add_agent(node.clone(), r("cpus:1;mem:1024"), Attributes::new(), &[]);
    allocator.add_framework(framework("f"), "*".into());
    let offer = allocator.allocate(start).remove(0);
    allocator.recover(
        &offer.framework_id,
        &node,
        &offer.resources,
        Some(Duration::from_secs(5)),
        start,
    );
    for seconds in [0, 1, 4] {
        let at = start + Duration::from_secs(seconds);
        assert!(
            allocator.allocate(at).is_empty(),
            "offered again after {seconds} s"
        );
    }
    assert_eq!(allocator.allocate(start + Duration::from_secs(5)).len(), 1);
}

/// As in Mesos, a refusal holds back only what was refused: when more is
/// freed on that agent, it is offered at once.
#[test]
fn a_refusal_does_not_hold_back_resources_freed_later() {
    let now = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    let node = agent("a");
    allocator.add_agent(node.clone(), r("cpus:2;mem:2048"), Attributes::new(), &[]);
    allocator.add_framework(framework("f"), "*".into());
    let offer = allocator.allocate(now).remove(0);
    // Half is used by a task; the other half is declined for an hour.
    let used = r("cpus:1;mem:1024");
    let rest = offer.resources.checked_sub(&used).unwrap();
    allocator.recover(
        &framework("f"),
        &node,
        &rest,
        Some(Duration::from_secs(3600)),
        now,
    );
    assert!(
        allocator.allocate(now).is_empty(),
        "the declined half alone stays refused"
    );
    // The task ends: the whole agent is more than was refused.
    allocator.recover(&framework("f"), &node, &used, None, now);
    let again = allocator.allocate(now);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].resources, r("cpus:2;mem:2048"));
}

/// Two pieces of one agent declined one after the other add up: the
/// framework is not offered their sum (found by the simulation, where two
/// pieces at two frameworks went round for ever).
#[test]
fn refusals_of_one_agent_add_up_while_they_last() {
    let now = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    let node = agent("a");
    allocator.add_agent(node.clone(), r("cpus:2;mem:2048"), Attributes::new(), &[]);
    allocator.add_framework(framework("f"), "*".into());
    let offer = allocator.allocate(now).remove(0);
    let first = r("cpus:1;mem:1024");
    let second = offer.resources.checked_sub(&first).unwrap();
    let refuse = Some(Duration::from_secs(5));
    allocator.recover(&framework("f"), &node, &first, refuse, now);
    allocator.recover(&framework("f"), &node, &second, refuse, now);
    assert!(
        allocator.allocate(now).is_empty(),
        "both pieces were refused"
    );
    assert!(allocator.allocate(now + Duration::from_secs(4)).is_empty());
    assert_eq!(allocator.allocate(now + Duration::from_secs(5)).len(), 1);
}

/// Expired refusals go a few at a time, the earliest first, each time
/// allocation runs, not in a pass over every framework's; those that last
/// stay; as many as were made since the last time may go at once, so
/// dropping keeps up with declines.
#[test]
fn expired_refusals_are_dropped_a_few_at_a_time() {
    let start = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    add_agents(&mut allocator, 600, "cpus:1;mem:1024");
    allocator.add_framework(framework("f"), "*".into());
    let refuse_all =
        |allocator: &mut HierarchicalAllocator, at: Instant, short: &dyn Fn(usize) -> bool| {
            let offers = allocator.allocate(at);
            for (index, offer) in offers.iter().enumerate() {
                let refuse = Duration::from_secs(if short(index) { 1 } else { 60 });
                allocator.recover(
                    &offer.framework_id,
                    &offer.agent_id,
                    &offer.resources,
                    Some(refuse),
                    at,
                );
            }
            offers.len()
        };
    assert_eq!(
        refuse_all(&mut allocator, start, &|index| index % 2 == 0),
        600
    );
    let held =
        |allocator: &HierarchicalAllocator| allocator.frameworks[&framework("f")].refusals.len();
    // Nothing has ended yet.
    assert!(allocator.allocate_agents(&[], start).is_empty());
    assert_eq!(held(&allocator), 600);
    let later = start + Duration::from_secs(2);
    allocator.allocate_agents(&[], later);
    assert_eq!(held(&allocator), 600 - super::REFUSALS_DROPPED_AT_ONCE);
    check_accounting(&allocator);
    allocator.allocate_agents(&[], later);
    assert_eq!(held(&allocator), 300, "the expired ones are gone");
    allocator.allocate_agents(&[], later);
    assert_eq!(held(&allocator), 300, "those that last stay");
    assert!(
        allocator.frameworks[&framework("f")]
            .refusals
            .values()
            .all(|(until, _)| *until > later)
    );
    // Revived: its refusals go, and the 600 agents are offered again, to
    // be refused for a second each; one call drops them all.
    allocator.revive(&framework("f"));
    check_accounting(&allocator);
    assert_eq!(refuse_all(&mut allocator, later, &|_| true), 600);
    allocator.allocate_agents(&[], later + Duration::from_secs(2));
    assert_eq!(held(&allocator), 0, "as many as were made go at once");
    check_accounting(&allocator);
}

#[test]
fn revive_forgets_refusals_and_suppress_stops_offers() {
    let start = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    let node = agent("a");
    allocator.add_agent(node.clone(), r("cpus:1;mem:1024"), Attributes::new(), &[]);
    allocator.add_framework(framework("f"), "*".into());
    let offer = allocator.allocate(start).remove(0);
    allocator.recover(
        &offer.framework_id,
        &node,
        &offer.resources,
        Some(Duration::from_secs(60)),
        start,
    );
    assert!(allocator.allocate(start).is_empty());
    allocator.revive(&framework("f"));
    let offer = allocator.allocate(start).remove(0);
    allocator.recover(&offer.framework_id, &node, &offer.resources, None, start);
    allocator.suppress(&framework("f"));
    assert!(allocator.allocate(start).is_empty());
    allocator.revive(&framework("f"));
    assert_eq!(allocator.allocate(start).len(), 1);
}

/// The seeds' standing filter: "only nodes with at least 32 GB of RAM".
#[test]
fn a_standing_filter_keeps_unsuitable_agents_from_being_offered() {
    let now = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    allocator.add_agent(
        agent("small"),
        r("cpus:8;mem:16384"),
        Attributes::new(),
        &[],
    );
    allocator.add_agent(
        agent("large"),
        r("cpus:8;mem:65536"),
        Attributes::new(),
        &[],
    );
    allocator.add_framework(framework("big-memory"), "*".into());
    allocator.set_constraints(
        &framework("big-memory"),
        vec![OfferConstraint::MinimumFree(r("mem:32768"))],
    );
    let allocations = allocator.allocate(now);
    assert_eq!(allocations.len(), 1);
    assert_eq!(allocations[0].agent_id, agent("large"));
    // The small agent stays free for others.
    assert_eq!(allocator.free(&agent("small")), Some(r("cpus:8;mem:16384")));
}

/// Three frameworks in two roles, role "analytics" weighing twice as much
/// as "web": over 30 equal agents, analytics gets 20 (10 per framework)
/// and web 10.
#[test]
fn weighted_drf_shares_converge() {
    let now = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    add_agents(&mut allocator, 30, "cpus:1;mem:1024");
    allocator.set_weight("analytics", 2.0);
    allocator.add_framework(framework("spark"), "analytics".into());
    allocator.add_framework(framework("hadoop"), "analytics".into());
    allocator.add_framework(framework("nginx"), "web".into());
    let allocations = allocator.allocate(now);
    assert_eq!(allocations.len(), 30);
    let counts = counts(&allocations);
    assert_eq!(counts["spark"], 10);
    assert_eq!(counts["hadoop"], 10);
    assert_eq!(counts["nginx"], 10);
    // Equal weighted shares: 20/30 ÷ 2 for analytics, 10/30 for web.
    let web = allocator.share(&framework("nginx")).unwrap();
    assert!((web - 1.0 / 3.0).abs() < 1e-9, "{web}");
}

#[test]
fn weighted_drf_with_unequal_weights() {
    let now = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    add_agents(&mut allocator, 30, "cpus:1;mem:1024");
    allocator.set_weight("analytics", 2.0);
    allocator.add_framework(framework("spark"), "analytics".into());
    allocator.add_framework(framework("nginx"), "web".into());
    let counts = counts(&allocator.allocate(now));
    assert_eq!(counts["spark"], 20);
    assert_eq!(counts["nginx"], 10);
}

#[test]
fn strict_priority_starves_lower_roles_while_higher_ones_want_resources() {
    let now = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::StrictPriority);
    let agents = add_agents(&mut allocator, 10, "cpus:1;mem:1024");
    allocator.set_weight("production", 10.0);
    allocator.add_framework(framework("batch"), "best-effort".into());
    allocator.add_framework(framework("serving"), "production".into());
    let counts = counts(&allocator.allocate(now));
    assert_eq!(counts.get("serving"), Some(&10));
    assert_eq!(counts.get("batch"), None);
    // Production returns two agents and wants no more: batch gets them.
    for agent in &agents[..2] {
        allocator.recover(
            &framework("serving"),
            agent,
            &r("cpus:1;mem:1024"),
            None,
            now,
        );
    }
    allocator.suppress(&framework("serving"));
    let allocations = allocator.allocate(now);
    assert_eq!(counts_of(&allocations, "batch"), 2);
}

fn counts_of(allocations: &[Allocation], name: &str) -> usize {
    counts(allocations).get(name).copied().unwrap_or(0)
}

#[test]
fn reserved_resources_go_only_to_their_role() {
    let now = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    allocator.add_agent(
        agent("a"),
        r("cpus(prod):2;cpus:1;mem:1024"),
        Attributes::new(),
        &[],
    );
    allocator.add_framework(framework("dev-tool"), "dev".into());
    let allocations = allocator.allocate(now);
    assert_eq!(allocations[0].resources, r("cpus:1;mem:1024"));
    allocator.add_framework(framework("prod-service"), "prod".into());
    let allocations = allocator.allocate(now);
    assert_eq!(allocations[0].framework_id, framework("prod-service"));
    assert_eq!(allocations[0].resources, r("cpus(prod):2"));
}

#[test]
fn crumbs_are_not_offered() {
    let now = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    allocator.add_agent(agent("a"), r("cpus:0.005;mem:16"), Attributes::new(), &[]);
    allocator.add_framework(framework("f"), "*".into());
    assert!(allocator.allocate(now).is_empty());
}

#[test]
fn returning_more_than_was_allocated_creates_nothing() {
    let now = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    let node = agent("a");
    allocator.add_agent(node.clone(), r("cpus:2;mem:2048"), Attributes::new(), &[]);
    allocator.add_framework(framework("f"), "*".into());
    let offer = allocator.allocate(now).remove(0);
    allocator.recover(&framework("f"), &node, &offer.resources, None, now);
    allocator.recover(&framework("f"), &node, &offer.resources, None, now);
    assert_eq!(allocator.free(&node), Some(r("cpus:2;mem:2048")));
}

#[test]
fn an_agent_that_leaves_takes_its_allocations_with_it() {
    let now = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    allocator.add_agent(agent("a"), r("cpus:2;mem:2048"), Attributes::new(), &[]);
    allocator.add_agent(agent("b"), r("cpus:2;mem:2048"), Attributes::new(), &[]);
    allocator.add_framework(framework("f"), "*".into());
    assert_eq!(allocator.allocate(now).len(), 2);
    allocator.remove_agent(&agent("a"));
    assert_eq!(
        allocator.allocated(&framework("f")),
        Some(r("cpus:2;mem:2048"))
    );
}

#[test]
fn a_re_registering_agent_brings_its_used_resources() {
    let now = Instant::now();
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    allocator.add_framework(framework("f"), "*".into());
    allocator.add_agent(
        agent("a"),
        r("cpus:4;mem:4096"),
        Attributes::new(),
        &[(framework("f"), r("cpus:3;mem:1024"))],
    );
    assert_eq!(allocator.free(&agent("a")), Some(r("cpus:1;mem:3072")));
    let allocations = allocator.allocate(now);
    assert_eq!(allocations[0].resources, r("cpus:1;mem:3072"));
}

/// A small deterministic generator, so the random walk below replays.
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
        (self.next() % bound as u64) as usize
    }
}

/// For every agent: free plus what each framework holds there equals the
/// agent's total, and no framework holds more than the agent has.
fn check_accounting(allocator: &HierarchicalAllocator) {
    for (agent_id, agent) in &allocator.agents {
        let mut sum = agent.free.clone();
        for framework in allocator.frameworks.values() {
            if let Some(held) = framework.on_agents.get(agent_id) {
                sum.add(held);
            }
        }
        assert_eq!(sum, agent.total, "accounting broken on {agent_id}");
    }
    for framework in allocator.frameworks.values() {
        let mut sum = [0; super::SHARED_SCALARS.len()];
        for held in framework.on_agents.values() {
            super::add_quantities(&mut sum, super::scalars(held));
        }
        assert_eq!(sum, framework.allocated);
    }
    // The refusals by when they end are exactly those the frameworks hold.
    let mut refusals = BTreeSet::new();
    for (framework_id, framework) in &allocator.frameworks {
        for (agent_id, (until, _)) in &framework.refusals {
            refusals.insert((*until, framework_id.clone(), agent_id.clone()));
        }
    }
    assert_eq!(
        refusals, allocator.refusals_ending,
        "the refusals by when they end"
    );
    for (name, role) in &allocator.roles {
        let mut sum = [0; super::SHARED_SCALARS.len()];
        for framework in allocator.frameworks.values().filter(|f| &f.role == name) {
            super::add_quantities(&mut sum, framework.allocated);
        }
        assert_eq!(sum, role.allocated, "role {name}");
        // Each framework is listed once, with its key, and the role's
        // tie-breaker is the least of their registration numbers.
        let listed: BTreeSet<&FrameworkId> = role.active.iter().map(|(_, id)| id).collect();
        assert_eq!(
            listed.len(),
            role.active.len(),
            "role {name} lists one twice"
        );
        for (key, id) in &role.active {
            assert_eq!(
                allocator.frameworks[id].key, *key,
                "{id}'s key in role {name}"
            );
        }
        let sequences: BTreeSet<u64> = role
            .active
            .iter()
            .map(|(_, id)| allocator.frameworks[id].sequence)
            .collect();
        assert_eq!(
            sequences, role.sequences,
            "role {name}'s registration numbers"
        );
    }
}

#[test]
fn random_operations_never_break_the_accounting() {
    for seed in 0..50 {
        let mut random = SplitMix(seed);
        let start = Instant::now();
        let policy = if seed % 2 == 0 {
            Policy::Drf
        } else {
            Policy::StrictPriority
        };
        let mut allocator = HierarchicalAllocator::new(policy);
        let mut outstanding: Vec<Allocation> = Vec::new();
        for step in 0..300u64 {
            let now = start + Duration::from_millis(step * 100);
            match random.below(8) {
                0 => {
                    let id = agent(&format!("a{}", random.below(6)));
                    let spec = [
                        "cpus:4;mem:4096",
                        "cpus:1;mem:512;ports:[1-10]",
                        "cpus(r1):2;mem:100",
                    ][random.below(3)];
                    outstanding.retain(|allocation| allocation.agent_id != id);
                    allocator.add_agent(id, r(spec), Attributes::new(), &[]);
                }
                1 => {
                    let id = agent(&format!("a{}", random.below(6)));
                    outstanding.retain(|allocation| allocation.agent_id != id);
                    allocator.remove_agent(&id);
                }
                2 => {
                    let id = framework(&format!("f{}", random.below(4)));
                    outstanding.retain(|allocation| allocation.framework_id != id);
                    allocator.add_framework(id, ["*", "r1", "r2"][random.below(3)].into());
                }
                3 => {
                    let id = framework(&format!("f{}", random.below(4)));
                    outstanding.retain(|allocation| allocation.framework_id != id);
                    allocator.remove_framework(&id);
                }
                4 | 5 => outstanding.extend(allocator.allocate(now)),
                6 if !outstanding.is_empty() => {
                    let allocation = outstanding.swap_remove(random.below(outstanding.len()));
                    let refuse = (random.below(2) == 0).then(|| Duration::from_secs(1));
                    allocator.recover(
                        &allocation.framework_id,
                        &allocation.agent_id,
                        &allocation.resources,
                        refuse,
                        now,
                    );
                }
                _ => {
                    let id = framework(&format!("f{}", random.below(4)));
                    if random.below(2) == 0 {
                        allocator.suppress(&id);
                    } else {
                        allocator.revive(&id);
                    }
                }
            }
            check_accounting(&allocator);
        }
    }
}

/// Giving a framework's offers back in one batch (its scheduler went)
/// leaves the allocator as giving them back one by one does: the same
/// free resources, the same allocations, the same next offers.
#[test]
fn recovering_all_at_once_is_recovering_each() {
    let now = Instant::now();
    let build = || {
        let mut allocator = HierarchicalAllocator::new(Policy::Drf);
        add_agents(&mut allocator, 6, "cpus:4;mem:4096");
        allocator.add_framework(framework("f"), "*".into());
        allocator.add_framework(framework("g"), "*".into());
        let offers = allocator.allocate(now);
        (allocator, offers)
    };
    let (mut each, offers) = build();
    let (mut all, same) = build();
    assert_eq!(offers, same);
    let of_f: Vec<(AgentId, Resources)> = offers
        .iter()
        .filter(|offer| offer.framework_id == framework("f"))
        .map(|offer| (offer.agent_id.clone(), offer.resources.clone()))
        .collect();
    assert!(!of_f.is_empty());
    for (agent_id, resources) in &of_f {
        each.recover(&framework("f"), agent_id, resources, None, now);
    }
    all.recover_all(&framework("f"), &of_f, now);
    for (agent_id, _) in &of_f {
        assert_eq!(all.free(agent_id), each.free(agent_id));
    }
    for id in ["f", "g"] {
        assert_eq!(
            all.allocated(&framework(id)),
            each.allocated(&framework(id))
        );
    }
    assert_eq!(all.allocated(&framework("f")), Some(Resources::new()));
    assert_eq!(all.allocate(now), each.allocate(now));
}
