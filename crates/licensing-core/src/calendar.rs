//! The account's calendar: an IANA time zone decides which day and month an instant falls in.
//!
//! Time zones come from the database bundled into the binary, so this module reads no file and
//! every machine agrees. "Now" is always an argument: nothing here reads the clock.

use std::fmt;

use jiff::{Timestamp, civil, tz::TimeZone};

/// The earliest instant the service takes as input: 2000-01-01T00:00:00Z.
pub const EARLIEST: Timestamp = Timestamp::constant(946_684_800, 0);
/// The first instant past the range the service takes as input: 2200-01-01T00:00:00Z. Every
/// time in a request or an event (a sandbox clock, an event's time, an audit range) lies in
/// `EARLIEST..END`; the months of that range, in any zone, are far inside what a month or a
/// timestamp can represent, so no arithmetic on them can overflow.
pub const END: Timestamp = Timestamp::constant(7_258_118_400, 0);
/// The earliest month the service takes as input (the month of [`EARLIEST`] west of UTC).
pub const EARLIEST_MONTH: BillingMonth = BillingMonth {
    year: 1999,
    month: 12,
};
/// The last month the service takes as input (the month of [`END`] east of UTC).
pub const LAST_MONTH: BillingMonth = BillingMonth {
    year: 2200,
    month: 1,
};

/// An instant outside [`EARLIEST`]..[`END`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {at}: must be from {EARLIEST} to before {END}")]
pub struct OutOfRange {
    /// The field that held it.
    pub field: String,
    /// The instant.
    pub at: Timestamp,
}

/// Checks that `at`, from the input field `field`, lies in the range the service takes.
pub fn check_in_range(field: &str, at: Timestamp) -> Result<Timestamp, OutOfRange> {
    if (EARLIEST..END).contains(&at) {
        Ok(at)
    } else {
        Err(OutOfRange {
            field: field.to_owned(),
            at,
        })
    }
}

/// A validated IANA time zone, with its name as given.
#[derive(Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

/// A time-zone name the bundled database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {name:?}")]
pub struct UnknownTimeZone {
    /// The refused name.
    pub name: String,
}

impl Zone {
    /// The zone named `name`, e.g. `Europe/Prague` (case as in the database).
    pub fn new(name: &str) -> Result<Zone, UnknownTimeZone> {
        let unknown = || UnknownTimeZone {
            name: name.to_owned(),
        };
        // Fixed offsets and POSIX strings are not IANA names; only database entries are accepted.
        if name.is_empty() || name.len() > 64 {
            return Err(unknown());
        }
        let tz = TimeZone::get(name).map_err(|_| unknown())?;
        Ok(Zone {
            name: name.to_owned(),
            tz,
        })
    }

    /// Coordinated Universal Time.
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".to_owned(),
            tz: TimeZone::UTC,
        }
    }

    /// The name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The calendar day `at` falls on in this zone.
    pub fn day(&self, at: Timestamp) -> civil::Date {
        at.to_zoned(self.tz.clone()).date()
    }

    /// The month `at` falls in, in this zone.
    pub fn month(&self, at: Timestamp) -> BillingMonth {
        let date = self.day(at);
        BillingMonth {
            year: date.year(),
            month: date.month(),
        }
    }

    /// `at` moved by `days` calendar days in this zone (a day across a DST change is 23 or 25
    /// hours long).
    pub fn add_days(&self, at: Timestamp, days: i64) -> Timestamp {
        let zoned = at.to_zoned(self.tz.clone());
        zoned
            .checked_add(jiff::Span::new().days(days))
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MAX)
    }

    /// The instant `month` starts in this zone (its first day's first instant, which need not be
    /// midnight on a day that starts with a DST gap).
    pub fn start_of(&self, month: BillingMonth) -> Timestamp {
        let date = civil::Date::new(month.year, month.month, 1).unwrap_or(civil::Date::MIN);
        date.to_zoned(self.tz.clone())
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MIN)
    }

    /// The instant `date` starts in this zone (its first instant, which need not be midnight on
    /// a day that starts with a DST gap).
    pub fn start_of_day(&self, date: civil::Date) -> Timestamp {
        date.to_zoned(self.tz.clone())
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MIN)
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name)
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

/// A calendar month of an account, e.g. `2026-03`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BillingMonth {
    year: i16,
    month: i8,
}

/// A month that is not `YYYY-MM`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid month {text:?}: expected YYYY-MM, e.g. \"2026-03\"")]
pub struct InvalidMonth {
    /// The refused text.
    pub text: String,
}

impl BillingMonth {
    /// The month `month` (1-12) of `year` (1-9999).
    pub fn new(year: i16, month: i8) -> Option<BillingMonth> {
        ((1..=9999).contains(&year) && (1..=12).contains(&month))
            .then_some(BillingMonth { year, month })
    }

    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Result<BillingMonth, InvalidMonth> {
        let invalid = || InvalidMonth {
            text: text.to_owned(),
        };
        let (year, month) = text.split_once('-').ok_or_else(invalid)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(invalid());
        }
        let year: i16 = year.parse().map_err(|_| invalid())?;
        let month: i8 = month.parse().map_err(|_| invalid())?;
        BillingMonth::new(year, month).ok_or_else(invalid)
    }

    /// The year.
    pub fn year(self) -> i16 {
        self.year
    }

    /// The month, 1-12.
    pub fn month(self) -> i8 {
        self.month
    }

    /// The month's calendar days, first to last.
    pub fn days(self) -> impl Iterator<Item = civil::Date> {
        let first = civil::Date::new(self.year, self.month, 1).unwrap_or(civil::Date::MIN);
        (1..=first.days_in_month()).filter_map(move |day| first.with().day(day).build().ok())
    }

    /// The month before this one; `None` before year 1.
    pub fn previous(self) -> Option<BillingMonth> {
        match self.month {
            1 => BillingMonth::new(self.year.checked_sub(1)?, 12),
            month => BillingMonth::new(self.year, month.checked_sub(1)?),
        }
    }

    /// The month after this one. Inputs are bounded to [`EARLIEST`]..[`END`], far inside the
    /// years a month can name, so the saturation at year 9999 is never reached in use.
    pub fn next(self) -> BillingMonth {
        match self.month {
            12 if self.year >= 9999 => self,
            12 => BillingMonth {
                year: self.year.saturating_add(1),
                month: 1,
            },
            month => BillingMonth {
                year: self.year,
                month: month.saturating_add(1),
            },
        }
    }
}

impl fmt::Display for BillingMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("valid timestamp")
    }

    fn month(text: &str) -> BillingMonth {
        BillingMonth::parse(text).expect("valid month")
    }

    #[test]
    fn a_month_has_its_calendar_days_and_each_day_starts_in_the_zone() {
        let cases = [
            ("2024-02", 29),
            ("2026-02", 28),
            ("2026-04", 30),
            ("2026-12", 31),
        ];
        for (text, count) in cases {
            let days: Vec<_> = month(text).days().collect();
            assert_eq!(days.len(), count, "{text}");
            assert_eq!(days[0].day(), 1, "{text}");
            assert!(
                days.windows(2).all(|w| w[0].tomorrow().ok() == Some(w[1])),
                "{text}"
            );
            assert!(
                days.iter()
                    .all(|d| Zone::utc().month(Zone::utc().start_of_day(*d)) == month(text))
            );
        }
        // The day of the spring DST change in Prague is 23 hours long.
        let prague = Zone::new("Europe/Prague").expect("known zone");
        let change = jiff::civil::date(2026, 3, 29);
        let next = change.tomorrow().expect("a next day");
        assert_eq!(
            prague
                .start_of_day(next)
                .duration_since(prague.start_of_day(change)),
            jiff::SignedDuration::from_hours(23)
        );
        assert_eq!(prague.start_of_day(change), at("2026-03-28T23:00:00Z"));
    }

    #[test]
    fn months_follow_the_account_zone() {
        let cases = [
            // 23:30 UTC on the last day of the month is already the next month east of UTC.
            ("Europe/Prague", "2026-01-31T23:30:00Z", "2026-02"),
            ("UTC", "2026-01-31T23:30:00Z", "2026-01"),
            // And still the previous month west of it.
            ("America/Los_Angeles", "2026-03-01T07:59:59Z", "2026-02"),
            ("America/Los_Angeles", "2026-03-01T08:00:00Z", "2026-03"),
            // Half-hour offset.
            ("Asia/Kolkata", "2026-04-30T18:29:59Z", "2026-04"),
            ("Asia/Kolkata", "2026-04-30T18:30:00Z", "2026-05"),
        ];
        for (zone, instant, expected) in cases {
            let zone = Zone::new(zone).expect("known zone");
            assert_eq!(
                zone.month(at(instant)),
                month(expected),
                "{zone:?} at {instant}"
            );
        }
    }

    #[test]
    fn month_starts_honour_daylight_saving() {
        let prague = Zone::new("Europe/Prague").expect("known zone");
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            prague.start_of(month("2026-03")),
            at("2026-02-28T23:00:00Z")
        );
        assert_eq!(
            prague.start_of(month("2026-04")),
            at("2026-03-31T22:00:00Z")
        );
        let la = Zone::new("America/Los_Angeles").expect("known zone");
        assert_eq!(la.start_of(month("2026-11")), at("2026-11-01T07:00:00Z"));
        assert_eq!(la.start_of(month("2026-12")), at("2026-12-01T08:00:00Z"));
    }

    #[test]
    fn unknown_zones_are_refused_by_name() {
        for name in ["Europe/Prgue", "", "+01:00", "Mars/Olympus"] {
            let error = Zone::new(name).expect_err("accepted");
            assert_eq!(error.to_string(), format!("unknown time zone {name:?}"));
        }
    }

    #[test]
    fn months_parse_print_and_advance() {
        assert_eq!(month("2026-12").next(), month("2027-01"));
        assert_eq!(month("2026-03").to_string(), "2026-03");
        for bad in [
            "2026-13", "2026-00", "26-03", "2026-3", "2026/03", "0000-01",
        ] {
            assert!(BillingMonth::parse(bad).is_err(), "{bad}");
        }
    }
}
