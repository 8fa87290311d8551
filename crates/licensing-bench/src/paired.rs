//! Ratios from paired rounds, with their uncertainty. A target like "at most 5 % below" is about
//! the true ratio; one run's total only estimates it, and on this kind of machine the same load
//! moves by several percent from one round to the next. Each round measures both sides of a
//! ratio back to back (so that drift over the run hits both alike), and the rounds' ratios give
//! an estimate with a confidence interval: Student's t on the logarithms of the per-round
//! ratios, whose mean is the logarithm of their geometric mean.

/// Two-sided 95 % quantiles of Student's t for 1 to 30 degrees of freedom (see [`t_975`]).
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The two-sided 95 % quantile of Student's t for `df` degrees of freedom (at least 1); past 30,
/// that of the tabulated value at or below `df` (40, 60, 120, then the normal's 1.96), which is
/// slightly larger than the exact one: the interval errs wide.
fn t_975(df: usize) -> f64 {
    match df {
        0 => f64::INFINITY,
        1..=30 => T_975[df - 1],
        31..=39 => T_975[29],
        40..=59 => 2.021,
        60..=119 => 2.000,
        120..=999 => 1.980,
        _ => 1.96,
    }
}

/// The geometric mean of per-round ratios and its 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    pub(crate) rounds: usize,
    pub(crate) ratio: f64,
    pub(crate) low: f64,
    pub(crate) high: f64,
}

/// A target on the true ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    AtLeast(f64),
    AtMost(f64),
}

/// Where an estimate stands against a target on the true ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The whole interval is within the target.
    Met,
    /// The whole interval is outside it.
    NotMet,
    /// The interval straddles it: more rounds, or a quieter machine, are needed to tell.
    NotShown,
}

impl Estimate {
    /// The estimate from each round's ratio; `None` with fewer than two rounds (no spread to
    /// judge by) or with a ratio that is not a positive finite number.
    pub(crate) fn of(ratios: &[f64]) -> Option<Estimate> {
        if ratios.len() < 2 || ratios.iter().any(|r| !r.is_finite() || *r <= 0.0) {
            return None;
        }
        let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
        let n = logs.len() as f64;
        let mean = logs.iter().sum::<f64>() / n;
        let variance = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let t = t_975(logs.len() - 1);
        let half = t * (variance / n).sqrt();
        Some(Estimate {
            rounds: logs.len(),
            ratio: mean.exp(),
            low: (mean - half).exp(),
            high: (mean + half).exp(),
        })
    }

    /// Against `target`.
    pub(crate) fn verdict(&self, target: Target) -> Verdict {
        let (within, outside) = match target {
            Target::AtLeast(bound) => (self.low >= bound, self.high < bound),
            Target::AtMost(bound) => (self.high <= bound, self.low > bound),
        };
        if within {
            Verdict::Met
        } else if outside {
            Verdict::NotMet
        } else {
            Verdict::NotShown
        }
    }

    /// For a report line: `0.962 (95 % CI 0.951-0.973, 24 rounds): target >= 0.95 met`.
    pub(crate) fn describe(&self, target: Target) -> String {
        let verdict = match self.verdict(target) {
            Verdict::Met => "met",
            Verdict::NotMet => "not met",
            Verdict::NotShown => "not shown either way",
        };
        let target = match target {
            Target::AtLeast(bound) => format!(">= {bound:.2}"),
            Target::AtMost(bound) => format!("<= {bound:.2}"),
        };
        format!(
            "{:.3} (95 % CI {:.3}-{:.3}, {} rounds): target {target} {verdict}",
            self.ratio, self.low, self.high, self.rounds
        )
    }
}

/// The estimate's line against a target of at least `bound`, or why there is none.
pub(crate) fn describe(ratios: &[f64], bound: f64) -> String {
    describe_against(ratios, Target::AtLeast(bound))
}

/// The estimate's line against `target`, or why there is none.
pub(crate) fn describe_against(ratios: &[f64], target: Target) -> String {
    Estimate::of(ratios).map_or_else(
        || {
            format!(
                "no interval from {} round(s): at least two are needed",
                ratios.len()
            )
        },
        |estimate| estimate.describe(target),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_rounds_give_a_point_interval() {
        let estimate = Estimate::of(&[0.96, 0.96, 0.96]).expect("three rounds");
        assert!((estimate.ratio - 0.96).abs() < 1e-12);
        assert!((estimate.low - 0.96).abs() < 1e-12 && (estimate.high - 0.96).abs() < 1e-12);
        assert_eq!(estimate.verdict(Target::AtLeast(0.95)), Verdict::Met);
        assert_eq!(estimate.verdict(Target::AtLeast(0.97)), Verdict::NotMet);
    }

    #[test]
    fn the_ratio_is_the_geometric_mean_and_the_interval_follows_t() {
        // ln 0.9 and ln 1.0: mean ln = ln(0.9)/2, so the ratio is sqrt(0.9); with two rounds
        // the half-width is 12.706 * sd / sqrt(2), sd = |ln 0.9| / sqrt(2).
        let estimate = Estimate::of(&[0.9, 1.0]).expect("two rounds");
        assert!((estimate.ratio - 0.9_f64.sqrt()).abs() < 1e-12);
        let half = 12.706 * (0.9_f64.ln().abs() / 2.0_f64.sqrt()) / 2.0_f64.sqrt();
        let mean = 0.9_f64.ln() / 2.0;
        assert!((estimate.low - (mean - half).exp()).abs() < 1e-12);
        assert!((estimate.high - (mean + half).exp()).abs() < 1e-12);
        assert_eq!(estimate.verdict(Target::AtLeast(0.95)), Verdict::NotShown);
    }

    #[test]
    fn more_rounds_of_the_same_spread_narrow_the_interval() {
        let few: Vec<f64> = [0.94, 0.98].repeat(3);
        let many: Vec<f64> = [0.94, 0.98].repeat(30);
        let few = Estimate::of(&few).expect("six rounds");
        let many = Estimate::of(&many).expect("sixty rounds");
        assert!(many.high - many.low < (few.high - few.low) / 2.0);
        assert_eq!(few.verdict(Target::AtLeast(0.95)), Verdict::NotShown);
        assert_eq!(many.verdict(Target::AtLeast(0.95)), Verdict::Met);
    }

    #[test]
    fn an_upper_bound_is_met_when_the_whole_interval_is_below_it() {
        let estimate = Estimate::of(&[1.05, 1.10, 1.08, 1.07]).expect("four rounds");
        assert_eq!(estimate.verdict(Target::AtMost(1.2)), Verdict::Met);
        assert_eq!(estimate.verdict(Target::AtMost(1.0)), Verdict::NotMet);
        assert_eq!(estimate.verdict(Target::AtMost(1.08)), Verdict::NotShown);
        assert!(
            estimate
                .describe(Target::AtMost(1.2))
                .ends_with("target <= 1.20 met")
        );
    }

    #[test]
    fn past_the_table_the_quantile_errs_wide_and_falls_towards_the_normal() {
        assert_eq!(t_975(1), 12.706);
        assert_eq!(t_975(30), 2.042);
        assert_eq!(t_975(35), 2.042);
        assert_eq!(t_975(59), 2.021);
        assert_eq!(t_975(200), 1.980);
        assert_eq!(t_975(5000), 1.96);
    }

    #[test]
    fn too_few_or_broken_ratios_give_no_estimate() {
        assert_eq!(Estimate::of(&[]), None);
        assert_eq!(Estimate::of(&[0.97]), None);
        assert_eq!(Estimate::of(&[0.97, 0.0]), None);
        assert_eq!(Estimate::of(&[0.97, f64::NAN]), None);
        assert!(describe(&[0.97], 0.95).contains("at least two"));
    }
}
