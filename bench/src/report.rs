//! Result rows and how they are printed.

use serde::Serialize;

/// Whether more or less is better for a row.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// One measurement: the baseline and ours, same unit, same run.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub baseline_name: &'static str,
    pub baseline: f64,
    pub ours: f64,
    /// ours ÷ baseline.
    pub ratio: f64,
    pub better: Better,
    /// The ratio the issue asks for, as text (`≥ 0.9`).
    pub target: &'static str,
    /// Whether the ratio meets the target in this run.
    pub meets_target: bool,
}

impl Row {
    pub fn new(
        name: impl Into<String>,
        unit: &'static str,
        baseline_name: &'static str,
        baseline: f64,
        ours: f64,
        better: Better,
        target_ratio: f64,
        target: &'static str,
    ) -> Row {
        let ratio = if baseline > 0.0 {
            ours / baseline
        } else {
            f64::NAN
        };
        let meets_target = match better {
            Better::Higher => ratio >= target_ratio,
            Better::Lower => ratio <= target_ratio,
        };
        Row {
            name: name.into(),
            unit,
            baseline_name,
            baseline,
            ours,
            ratio,
            better,
            target,
            meets_target,
        }
    }
}

fn human(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

pub fn print_table(rows: &[Row]) {
    println!(
        "{:<34} {:>10} {:>12} {:>12} {:>7}  {:<8} {:<4}  baseline",
        "benchmark", "unit", "baseline", "ours", "ratio", "target", "met"
    );
    for row in rows {
        println!(
            "{:<34} {:>10} {:>12} {:>12} {:>6.2}×  {:<8} {:<4}  {}",
            row.name,
            row.unit,
            human(row.baseline),
            human(row.ours),
            row.ratio,
            row.target,
            if row.meets_target { "yes" } else { "NO" },
            row.baseline_name,
        );
    }
}
