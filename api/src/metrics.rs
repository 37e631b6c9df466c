//! The one writer of masters' and agents' metrics: each metric carries
//! its Apache Mesos name (`master/tasks_running`, `slave/cpus_used`) and
//! is written as Prometheus text (`/metrics`: `strata_master_tasks_running`,
//! `strata_agent_cpus_used`, counters ending in `_total`) and as Mesos's
//! flat JSON (`/metrics/snapshot`).

use std::fmt::Write;

/// Whether a metric only grows (a count since start) or moves both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One metric, by its Apache Mesos name (or Strata's own in Mesos's
/// style).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub value: f64,
    pub kind: Kind,
}

impl Metric {
    pub fn gauge(name: &'static str, value: f64) -> Metric {
        Metric {
            name,
            value,
            kind: Kind::Gauge,
        }
    }

    pub fn counter(name: &'static str, value: f64) -> Metric {
        Metric {
            name,
            value,
            kind: Kind::Counter,
        }
    }

    /// Its Prometheus name: `strata_` then the Mesos name with `slave/`
    /// read as `agent/` and `/` as `_`; counters end in `_total`.
    pub fn prometheus_name(&self) -> String {
        let name = self
            .name
            .strip_prefix("slave/")
            .map_or_else(|| self.name.to_owned(), |rest| format!("agent/{rest}"));
        let base = format!("strata_{}", name.replace('/', "_"));
        match self.kind {
            Kind::Counter => format!("{base}_total"),
            Kind::Gauge => base,
        }
    }
}

/// `/metrics`: Prometheus's text format (version 0.0.4).
pub fn prometheus(metrics: &[Metric]) -> String {
    let mut text = String::new();
    for metric in metrics {
        let name = metric.prometheus_name();
        let kind = match metric.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = write!(
            text,
            "# HELP {name} Apache Mesos metric {}.\n# TYPE {name} {kind}\n{name} {}\n",
            metric.name, metric.value
        );
    }
    text
}

/// The content type of [`prometheus`]'s text.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// `/metrics/snapshot`: one JSON object of Mesos names to values.
pub fn snapshot(metrics: &[Metric]) -> Vec<u8> {
    let map: serde_json::Map<String, serde_json::Value> = metrics
        .iter()
        .map(|metric| (metric.name.to_owned(), serde_json::json!(metric.value)))
        .collect();
    let mut body = serde_json::to_vec_pretty(&map).unwrap_or_default();
    body.push(b'\n');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_and_mesos_names() {
        let metrics = [
            Metric::gauge("master/tasks_running", 2.0),
            Metric::counter("master/tasks_finished", 5.0),
            Metric::gauge("slave/cpus_used", 0.5),
        ];
        let text = prometheus(&metrics);
        assert!(
            text.contains(
                "# TYPE strata_master_tasks_running gauge\nstrata_master_tasks_running 2\n"
            )
        );
        assert!(text.contains(
            "# TYPE strata_master_tasks_finished_total counter\nstrata_master_tasks_finished_total 5\n"
        ));
        assert!(text.contains("strata_agent_cpus_used 0.5\n"));
        let json: serde_json::Value = serde_json::from_slice(&snapshot(&metrics)).unwrap();
        assert_eq!(json["slave/cpus_used"], 0.5);
        assert_eq!(json["master/tasks_finished"], 5.0);
    }
}
