//! Reading a price list file (TOML) into the domain's [`PriceList`]. The file format belongs to
//! the edge; the domain only sees validated amounts.

use std::path::Path;

use licensing_core::{PriceList, PriceListInput};
use serde::Deserialize;

/// The sample price list shipped with the binary.
pub const SAMPLE: &str = include_str!("price-list.sample.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceListFile {
    name: String,
    version: u32,
    currency: String,
    seat_monthly: SeatMonthly,
    seat_daily: SeatDaily,
    add_ons: AddOns,
    meters: Meters,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case, clippy::upper_case_acronyms)]
struct SeatMonthly {
    DASHBOARD: i64,
    STANDARD: i64,
    PROFESSIONAL: i64,
    ENTERPRISE: i64,
    DEVELOPER: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case, clippy::upper_case_acronyms)]
struct SeatDaily {
    PROFESSIONAL: i64,
    ENTERPRISE: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddOns {
    call_recording_unit_monthly: i64,
    outbound_seat_monthly: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meters {
    speech_to_text_minute: i64,
    power_pack: i64,
}

/// Parses and validates price list text.
pub fn parse(text: &str) -> Result<PriceList, String> {
    let file: PriceListFile =
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
    PriceList::new(PriceListInput {
        name: file.name,
        version: file.version,
        currency: file.currency,
        seat_monthly: [
            file.seat_monthly.DASHBOARD,
            file.seat_monthly.STANDARD,
            file.seat_monthly.PROFESSIONAL,
            file.seat_monthly.ENTERPRISE,
            file.seat_monthly.DEVELOPER,
        ],
        seat_daily_professional: file.seat_daily.PROFESSIONAL,
        seat_daily_enterprise: file.seat_daily.ENTERPRISE,
        recording_unit_monthly: file.add_ons.call_recording_unit_monthly,
        outbound_seat_monthly: file.add_ons.outbound_seat_monthly,
        speech_to_text_minute: file.meters.speech_to_text_minute,
        power_pack: file.meters.power_pack,
    })
    .map_err(|e| e.to_string())
}

/// Reads and parses a price list file.
pub fn load(path: &Path) -> Result<PriceList, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    parse(&text)
}

/// The sample price list.
pub fn sample() -> Result<PriceList, String> {
    parse(SAMPLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use licensing_core::Tier;

    #[test]
    fn the_sample_parses() {
        let prices = sample().expect("sample price list is valid");
        assert_eq!(prices.name(), "sample");
        assert_eq!(prices.currency().as_str(), "EUR");
        assert_eq!(prices.seat_monthly(Tier::Professional), 4900);
        assert_eq!(prices.seat_daily(Tier::Enterprise), Some(390));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = SAMPLE.replace("power_pack = 4900", "power_pack = 4900\npower_pak = 1");
        let error = parse(&text).expect_err("unknown key accepted");
        assert!(error.contains("power_pak"), "{error}");
    }

    #[test]
    fn a_negative_price_is_refused_naming_it() {
        let text = SAMPLE.replace("STANDARD = 2900", "STANDARD = -1");
        let error = parse(&text).expect_err("negative price accepted");
        assert!(
            error.contains("STANDARD") && error.contains("-1"),
            "{error}"
        );
    }
}
