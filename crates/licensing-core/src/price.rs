//! Prices: the price list (integer minor units in one currency) and a resolved member's price.

use std::fmt;

use crate::tier::Tier;

/// The largest amount a price list may hold, in minor units (ten billion in major units): large
/// enough for any real price, small enough that quantity × price never overflows `i64`.
pub const MAX_PRICE: i64 = 1_000_000_000_000;

/// An ISO 4217 currency code: three uppercase ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a code such as `EUR`; `None` unless three uppercase ASCII letters.
    pub fn parse(code: &str) -> Option<Currency> {
        let bytes: [u8; 3] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_uppercase)
            .then_some(Currency(bytes))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A price list as read from configuration, before validation. Amounts are minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceListInput {
    /// Name, quoted on every price and statement.
    pub name: String,
    /// Version, quoted with the name.
    pub version: u32,
    /// ISO 4217 code of every amount.
    pub currency: String,
    /// Monthly seat price per tier, lowest tier first.
    pub seat_monthly: [i64; 5],
    /// Price per login day of a PROFESSIONAL member billed daily.
    pub seat_daily_professional: i64,
    /// Price per login day of an ENTERPRISE member billed daily.
    pub seat_daily_enterprise: i64,
    /// Monthly price of one call-recording unit.
    pub recording_unit_monthly: i64,
    /// Monthly price of an outbound add-on seat.
    pub outbound_seat_monthly: i64,
    /// Price of a speech-to-text minute beyond the base pack.
    pub speech_to_text_minute: i64,
    /// Price of one Power Pack.
    pub power_pack: i64,
}

/// A price list that is not acceptable, naming the field and value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid price list {field} {value}: {problem}")]
pub struct InvalidPriceList {
    /// The field, e.g. `seat_monthly.STANDARD`.
    pub field: String,
    /// The refused value, rendered.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

/// A validated price list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceList {
    name: String,
    version: u32,
    currency: Currency,
    seat_monthly: [i64; 5],
    seat_daily_professional: i64,
    seat_daily_enterprise: i64,
    recording_unit_monthly: i64,
    outbound_seat_monthly: i64,
    speech_to_text_minute: i64,
    power_pack: i64,
}

impl PriceList {
    /// Validates `input`: a name, a currency code, and every amount in `0..=MAX_PRICE`.
    pub fn new(input: PriceListInput) -> Result<PriceList, InvalidPriceList> {
        let invalid = |field: &str, value: String, problem: &str| InvalidPriceList {
            field: field.to_owned(),
            value,
            problem: problem.to_owned(),
        };
        if input.name.trim().is_empty() || input.name.len() > 64 {
            return Err(invalid(
                "name",
                format!("{:?}", input.name),
                "must be 1 to 64 bytes, not blank",
            ));
        }
        let currency = Currency::parse(&input.currency).ok_or_else(|| {
            invalid(
                "currency",
                format!("{:?}", input.currency),
                "must be an ISO 4217 code such as \"EUR\"",
            )
        })?;
        let seat_fields = Tier::ALL.map(|t| format!("seat_monthly.{t}"));
        let mut amounts: Vec<(&str, i64)> = seat_fields
            .iter()
            .map(String::as_str)
            .zip(input.seat_monthly)
            .collect();
        amounts.extend([
            ("seat_daily.PROFESSIONAL", input.seat_daily_professional),
            ("seat_daily.ENTERPRISE", input.seat_daily_enterprise),
            (
                "add_ons.call_recording_unit_monthly",
                input.recording_unit_monthly,
            ),
            ("add_ons.outbound_seat_monthly", input.outbound_seat_monthly),
            ("meters.speech_to_text_minute", input.speech_to_text_minute),
            ("meters.power_pack", input.power_pack),
        ]);
        for (field, amount) in amounts {
            if !(0..=MAX_PRICE).contains(&amount) {
                return Err(invalid(
                    field,
                    amount.to_string(),
                    &format!("must be from 0 to {MAX_PRICE} minor units"),
                ));
            }
        }
        Ok(PriceList {
            name: input.name,
            version: input.version,
            currency,
            seat_monthly: input.seat_monthly,
            seat_daily_professional: input.seat_daily_professional,
            seat_daily_enterprise: input.seat_daily_enterprise,
            recording_unit_monthly: input.recording_unit_monthly,
            outbound_seat_monthly: input.outbound_seat_monthly,
            speech_to_text_minute: input.speech_to_text_minute,
            power_pack: input.power_pack,
        })
    }

    /// The list's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The list's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The currency of every amount.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Monthly price of a seat of `tier`.
    pub fn seat_monthly(&self, tier: Tier) -> i64 {
        self.seat_monthly[tier.index()]
    }

    /// Price per login day of `tier`, for the tiers that allow daily billing.
    pub fn seat_daily(&self, tier: Tier) -> Option<i64> {
        match tier {
            Tier::Professional => Some(self.seat_daily_professional),
            Tier::Enterprise => Some(self.seat_daily_enterprise),
            Tier::Dashboard | Tier::Standard | Tier::Developer => None,
        }
    }

    /// Monthly price of one call-recording unit.
    pub fn recording_unit_monthly(&self) -> i64 {
        self.recording_unit_monthly
    }

    /// Monthly price of an outbound add-on seat.
    pub fn outbound_seat_monthly(&self) -> i64 {
        self.outbound_seat_monthly
    }

    /// Price of a speech-to-text minute beyond the base pack.
    pub fn speech_to_text_minute(&self) -> i64 {
        self.speech_to_text_minute
    }

    /// Price of one Power Pack.
    pub fn power_pack(&self) -> i64 {
        self.power_pack
    }
}

/// What a price line is charged for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PriceItem {
    /// A seat of a tier (or, billed per login day, a day at that tier).
    Seat(Tier),
    /// Call-recording units.
    CallRecording,
    /// The outbound add-on seat.
    Outbound,
}

/// The period a price line is charged per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// Per calendar month.
    Month,
    /// Per calendar day with at least one login.
    LoginDay,
}

/// One line of a member's price: `quantity × unit_price = amount`, per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceLine {
    /// What is charged.
    pub item: PriceItem,
    /// Per what.
    pub period: Period,
    /// How many units.
    pub quantity: u32,
    /// Price of one unit, minor units.
    pub unit_price: i64,
    /// `quantity × unit_price`, minor units.
    pub amount: i64,
}

/// The price of a resolved member: at most three lines (seat, recording, outbound), kept inline
/// so that resolving never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberPrice {
    lines: [PriceLine; 3],
    len: u8,
    /// Sum of the monthly lines, minor units.
    pub per_month: i64,
    /// Sum of the per-login-day lines, minor units.
    pub per_login_day: i64,
    /// The currency of every amount.
    pub currency: Currency,
}

impl MemberPrice {
    const NO_LINE: PriceLine = PriceLine {
        item: PriceItem::Outbound,
        period: Period::Month,
        quantity: 0,
        unit_price: 0,
        amount: 0,
    };

    pub(crate) fn new(currency: Currency) -> Self {
        MemberPrice {
            lines: [Self::NO_LINE; 3],
            len: 0,
            per_month: 0,
            per_login_day: 0,
            currency,
        }
    }

    /// Adds a line; amounts stay far from overflow because prices are capped at [`MAX_PRICE`]
    /// and quantities at a few hundred.
    pub(crate) fn push(&mut self, item: PriceItem, period: Period, quantity: u32, unit_price: i64) {
        let amount = i64::from(quantity).saturating_mul(unit_price);
        let index = usize::from(self.len);
        debug_assert!(
            index < self.lines.len(),
            "a member has at most three price lines"
        );
        let Some(slot) = self.lines.get_mut(index) else {
            return;
        };
        *slot = PriceLine {
            item,
            period,
            quantity,
            unit_price,
            amount,
        };
        self.len = self.len.saturating_add(1);
        match period {
            Period::Month => self.per_month = self.per_month.saturating_add(amount),
            Period::LoginDay => self.per_login_day = self.per_login_day.saturating_add(amount),
        }
    }

    /// The lines: the seat first, then add-ons.
    pub fn lines(&self) -> &[PriceLine] {
        &self.lines[..usize::from(self.len)]
    }
}

/// A price list for tests: seats 500 / 2900 / 4900 / 6900 / 9900 a month, daily 290 (PRO) and
/// 390 (ENT), recording unit 700, outbound seat 1500, speech-to-text 2 a minute, Power Pack 4900,
/// in EUR minor units.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::{PriceList, PriceListInput};

    /// The test price list's input.
    pub fn input() -> PriceListInput {
        PriceListInput {
            name: "test".into(),
            version: 1,
            currency: "EUR".into(),
            seat_monthly: [500, 2900, 4900, 6900, 9900],
            seat_daily_professional: 290,
            seat_daily_enterprise: 390,
            recording_unit_monthly: 700,
            outbound_seat_monthly: 1500,
            speech_to_text_minute: 2,
            power_pack: 4900,
        }
    }

    /// The test price list.
    pub fn prices() -> PriceList {
        match PriceList::new(input()) {
            Ok(prices) => prices,
            Err(e) => panic!("the test price list is invalid: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::input, *};

    #[test]
    fn currency_codes_are_three_uppercase_letters() {
        assert_eq!(
            Currency::parse("EUR").map(|c| c.to_string()),
            Some("EUR".to_owned())
        );
        for bad in ["", "eur", "EURO", "E1R", "ÉUR"] {
            assert_eq!(Currency::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn invalid_lists_name_the_field_and_value() {
        let cases = [
            (
                PriceListInput {
                    currency: "euro".into(),
                    ..input()
                },
                "invalid price list currency \"euro\"",
            ),
            (
                PriceListInput {
                    name: " ".into(),
                    ..input()
                },
                "invalid price list name \" \"",
            ),
            (
                PriceListInput {
                    seat_monthly: [500, -1, 4900, 6900, 9900],
                    ..input()
                },
                "invalid price list seat_monthly.STANDARD -1: must be from 0",
            ),
            (
                PriceListInput {
                    power_pack: MAX_PRICE + 1,
                    ..input()
                },
                "invalid price list meters.power_pack 1000000000001",
            ),
        ];
        for (input, expected) in cases {
            let error = PriceList::new(input).expect_err("accepted").to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn daily_prices_exist_only_for_daily_tiers() {
        let prices = PriceList::new(input()).expect("valid");
        let daily: Vec<_> = Tier::ALL
            .into_iter()
            .map(|t| prices.seat_daily(t))
            .collect();
        assert_eq!(daily, [None, None, Some(290), Some(390), None]);
    }
}
