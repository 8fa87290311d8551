//! Licence tiers, ordered lowest first; each includes everything of the tiers below it.

use std::fmt;

/// A licence tier. The derived order is the SPEC's: `Dashboard < Standard < ... < Developer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Dashboards only: no communication, no skills.
    Dashboard,
    /// Takes contacts on one skill.
    Standard,
    /// Several skills, statistics, reporting and team settings.
    Professional,
    /// Workspace administration.
    Enterprise,
    /// Workflow configuration and the advanced API.
    Developer,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 5] = [
        Tier::Dashboard,
        Tier::Standard,
        Tier::Professional,
        Tier::Enterprise,
        Tier::Developer,
    ];

    /// The tier's name as the contract spells it.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Dashboard => "DASHBOARD",
            Tier::Standard => "STANDARD",
            Tier::Professional => "PROFESSIONAL",
            Tier::Enterprise => "ENTERPRISE",
            Tier::Developer => "DEVELOPER",
        }
    }

    /// Position in [`Tier::ALL`], for per-tier tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether a member of this tier may be billed per login day (SPEC 3: PROFESSIONAL and
    /// ENTERPRISE only).
    pub fn allows_daily_billing(self) -> bool {
        matches!(self, Tier::Professional | Tier::Enterprise)
    }

    /// Whether one call-recording unit is included in the seat (SPEC 3: from ENTERPRISE up).
    pub fn includes_recording(self) -> bool {
        self >= Tier::Enterprise
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered_lowest_first() {
        assert!(Tier::ALL.windows(2).all(|w| w[0] < w[1]));
        for (i, tier) in Tier::ALL.iter().enumerate() {
            assert_eq!(tier.index(), i);
        }
    }

    #[test]
    fn daily_billing_and_included_recording_follow_the_spec() {
        let daily: Vec<_> = Tier::ALL
            .into_iter()
            .filter(|t| t.allows_daily_billing())
            .collect();
        assert_eq!(daily, [Tier::Professional, Tier::Enterprise]);
        let included: Vec<_> = Tier::ALL
            .into_iter()
            .filter(|t| t.includes_recording())
            .collect();
        assert_eq!(included, [Tier::Enterprise, Tier::Developer]);
    }
}
