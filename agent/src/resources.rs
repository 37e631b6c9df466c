//! What an agent offers: detected amounts, overridden by `--resources`.
//!
//! Detection gives cpus, memory and disk ([`crate::detection`]); ports
//! default to [31000-32000] as in Mesos. Every resource named in the
//! operator's `--resources` replaces the detected one of that name
//! entirely (all roles), and resources detection knows nothing about
//! (gpus, custom ones) are added as given.

use strata_protocol::resources::MAX_SCALAR_MILLIS;
use strata_protocol::{Ranges, Resource, Resources, Scalar, UNRESERVED, Value};

use crate::detection::HostResources;

/// Mesos's default port range for tasks.
pub const DEFAULT_PORTS: (u64, u64) = (31000, 32000);

/// The agent's total resources.
pub fn total(detected: HostResources, overrides: &Resources) -> Resources {
    let mut defaults = Resources::new();
    // A filesystem may report exabytes; what is offered stops at the
    // largest amount a resource may hold.
    let scalar = |name: &str, amount: Scalar| Resource {
        name: name.to_owned(),
        role: UNRESERVED.to_owned(),
        value: Value::Scalar(Scalar::from_millis(amount.millis().min(MAX_SCALAR_MILLIS))),
    };
    let defaults_list = [
        scalar("cpus", Scalar::from_millis(detected.cpus_millis)),
        scalar("mem", Scalar::whole(detected.mem_mib)),
        scalar("disk", Scalar::whole(detected.disk_mib)),
        Resource {
            name: "ports".to_owned(),
            role: UNRESERVED.to_owned(),
            value: Value::Ranges(Ranges::interval(DEFAULT_PORTS.0, DEFAULT_PORTS.1)),
        },
    ];
    let overridden: std::collections::BTreeSet<String> =
        overrides.iter().map(|resource| resource.name).collect();
    for resource in defaults_list {
        if !overridden.contains(&resource.name) {
            // Each default has a known name and kind and a bounded amount:
            // adding cannot fail.
            let _ = defaults.try_add_one(resource);
        }
    }
    defaults.add(overrides);
    defaults
}

#[cfg(test)]
mod tests {
    use super::*;

    const DETECTED: HostResources = HostResources {
        cpus_millis: 2000,
        mem_mib: 23081,
        disk_mib: 252899,
    };

    fn check(overrides: &str, expected: &str) {
        let overrides: Resources = overrides.parse().unwrap();
        assert_eq!(
            total(DETECTED, &overrides).to_string(),
            expected,
            "{overrides}"
        );
    }

    #[test]
    fn an_enormous_filesystem_offers_the_largest_amount() {
        let detected = HostResources {
            disk_mib: u64::MAX / 2,
            ..DETECTED
        };
        let total = total(detected, &Resources::new());
        assert_eq!(
            total.scalar_total("disk"),
            Scalar::from_millis(MAX_SCALAR_MILLIS)
        );
        assert_eq!(total.scalar_total("mem"), Scalar::whole(23081));
    }

    #[test]
    fn overrides_replace_detected_amounts_by_name() {
        check("", "cpus:2;disk:252899;mem:23081;ports:[31000-32000]");
        check(
            "cpus:4;mem:4096",
            "cpus:4;disk:252899;mem:4096;ports:[31000-32000]",
        );
        check(
            "cpus(prod):1;gpus:2",
            "cpus(prod):1;disk:252899;gpus:2;mem:23081;ports:[31000-32000]",
        );
        check(
            "ports:[8000-8010]",
            "cpus:2;disk:252899;mem:23081;ports:[8000-8010]",
        );
    }
}
