//! Call-recording retention: the free 14 days, or a whole number of 3-month periods, each of
//! which is one billable unit per recorded member (SPEC 6).

use std::fmt;

/// The longest retention accepted, in months (100 years).
const MAX_MONTHS: u32 = 1200;

/// How long an account keeps call recordings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordingRetention {
    /// Number of 3-month periods; zero is the free 14-day retention.
    periods: u16,
}

/// A retention that is not 14 days nor a whole number of 3-month periods.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid recording retention {months} months: must be a multiple of 3 from 3 to {MAX_MONTHS}"
)]
pub struct InvalidRetention {
    /// The refused number of months.
    pub months: u32,
}

impl RecordingRetention {
    /// The free 14-day retention: no units.
    pub const FOURTEEN_DAYS: RecordingRetention = RecordingRetention { periods: 0 };

    /// A retention of `months`, which must be a multiple of 3 between 3 and 1200.
    pub fn months(months: u32) -> Result<Self, InvalidRetention> {
        if months == 0 || !months.is_multiple_of(3) || months > MAX_MONTHS {
            return Err(InvalidRetention { months });
        }
        let periods = u16::try_from(months / 3).map_err(|_| InvalidRetention { months })?;
        Ok(RecordingRetention { periods })
    }

    /// Months kept, or `None` for the 14-day retention.
    pub fn as_months(self) -> Option<u32> {
        (self.periods > 0).then(|| u32::from(self.periods) * 3)
    }

    /// Recording units per recorded member: one per 3-month period.
    pub fn units(self) -> u32 {
        u32::from(self.periods)
    }
}

impl Default for RecordingRetention {
    /// Three months: one unit per recorded member.
    fn default() -> Self {
        RecordingRetention { periods: 1 }
    }
}

impl fmt::Display for RecordingRetention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_months() {
            None => f.write_str("14 days"),
            Some(months) => write!(f, "{months} months"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_one_per_three_months() {
        assert_eq!(RecordingRetention::FOURTEEN_DAYS.units(), 0);
        assert_eq!(RecordingRetention::default().units(), 1);
        assert_eq!(
            RecordingRetention::months(9).map(RecordingRetention::units),
            Ok(3)
        );
        assert_eq!(
            RecordingRetention::months(1200).map(RecordingRetention::units),
            Ok(400)
        );
    }

    #[test]
    fn other_lengths_are_refused_naming_the_value() {
        for months in [0, 1, 2, 4, 13, 1203, u32::MAX] {
            let error = RecordingRetention::months(months).expect_err("accepted");
            assert!(
                error.to_string().contains(&format!("{months} months")),
                "{error}"
            );
        }
    }

    #[test]
    fn display_names_the_period() {
        assert_eq!(RecordingRetention::FOURTEEN_DAYS.to_string(), "14 days");
        assert_eq!(
            RecordingRetention::months(6).map(|r| r.to_string()),
            Ok("6 months".to_owned())
        );
    }
}
