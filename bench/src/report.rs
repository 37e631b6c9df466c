//! Result rows and how they are printed.

use serde::Serialize;

/// Whether more or less is better for a row.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// The ratio a row must reach, if it has a target.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// ours ÷ baseline must be at least this (`Better::Higher`) or at most
    /// this (`Better::Lower`).
    Ratio(f64),
    /// Ours must be at least (`Better::Higher`) or at most
    /// (`Better::Lower`) this, in the row's unit.
    Absolute(f64),
    /// Shown for context; no target.
    None,
}

/// One measurement: the baseline and ours, same unit, same run.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub baseline_name: &'static str,
    /// `None` where no baseline figure exists for the row.
    pub baseline: Option<f64>,
    pub ours: f64,
    /// ours ÷ baseline.
    pub ratio: Option<f64>,
    pub better: Better,
    /// The ratio asked for, as text (`≥ 0.9`), or `-` for context rows.
    pub target: String,
    /// Whether the ratio meets the target in this run; `None` without one.
    pub meets_target: Option<bool>,
}

/// What a row measures, before the numbers.
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    pub unit: &'static str,
    pub baseline_name: &'static str,
    pub better: Better,
    pub target: Target,
}

impl Row {
    pub fn new(name: impl Into<String>, measure: Measure, baseline: f64, ours: f64) -> Row {
        let ratio = (baseline > 0.0).then(|| ours / baseline);
        let (target, meets_target) = match (measure.target, measure.better) {
            (Target::Ratio(goal), Better::Higher) => {
                (format!("≥ {goal}"), ratio.map(|ratio| ratio >= goal))
            }
            (Target::Ratio(goal), Better::Lower) => {
                (format!("≤ {goal}"), ratio.map(|ratio| ratio <= goal))
            }
            (Target::Absolute(goal), Better::Higher) => {
                (format!("≥ {goal} {}", measure.unit), Some(ours >= goal))
            }
            (Target::Absolute(goal), Better::Lower) => {
                (format!("≤ {goal} {}", measure.unit), Some(ours <= goal))
            }
            (Target::None, _) => ("-".to_owned(), None),
        };
        Row {
            name: name.into(),
            unit: measure.unit,
            baseline_name: measure.baseline_name,
            baseline: (baseline > 0.0).then_some(baseline),
            ours,
            ratio,
            better: measure.better,
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
        "{:<34} {:>7} {:>10} {:>10} {:>7}  {:<7} {:<4}  baseline",
        "benchmark", "unit", "baseline", "ours", "ratio", "target", "met"
    );
    for row in rows {
        let met = match row.meets_target {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let baseline = row.baseline.map_or_else(|| "-".to_owned(), human);
        let ratio = row
            .ratio
            .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}×"));
        println!(
            "{:<34} {:>7} {:>10} {:>10} {:>7}  {:<7} {:<4}  {}",
            row.name,
            row.unit,
            baseline,
            human(row.ours),
            ratio,
            row.target,
            met,
            row.baseline_name,
        );
    }
}
