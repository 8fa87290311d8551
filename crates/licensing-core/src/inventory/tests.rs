//! Cart and peak tests: hand-computed tables, then random sequences of changes across months and
//! time zones against a plain model that keeps every change and computes peaks from scratch.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::price::testing::prices;
use crate::{
    calendar::Zone,
    member::{MemberSettings, MemberSettingsInput, Permission},
    resolve::resolve,
    retention::RecordingRetention,
};

fn month(text: &str) -> BillingMonth {
    BillingMonth::parse(text).expect("valid month")
}

fn change(product: Product, seats: u32) -> SeatChange {
    SeatChange { product, seats }
}

#[test]
fn a_cart_prices_this_month_at_the_peak_and_next_month_at_the_new_count() {
    let prices = prices();
    let march = month("2026-03");
    let start = Inventory::new(march);
    let grow = cart(
        &start,
        &[
            change(Product::StandardSeat, 10),
            change(Product::OutboundSeat, 2),
        ],
        march,
        &prices,
    )
    .expect("valid cart");
    assert_eq!(
        grow.lines,
        [
            CartLine {
                product: Product::StandardSeat,
                from: 0,
                to: 10,
                this_month: 29_000,
                next_month: 29_000
            },
            CartLine {
                product: Product::OutboundSeat,
                from: 0,
                to: 2,
                this_month: 3_000,
                next_month: 3_000
            },
        ]
    );
    assert_eq!((grow.this_month, grow.next_month), (32_000, 32_000));
    assert_eq!(grow.after.revision, 2);

    // A reduction: this month stays at its peak, next month is cheaper.
    let shrink = cart(
        &grow.after,
        &[change(Product::StandardSeat, 4)],
        march,
        &prices,
    )
    .expect("valid cart");
    assert_eq!(shrink.lines[0].this_month, 0);
    assert_eq!(shrink.lines[0].next_month, -6 * 2900);
    assert_eq!(shrink.after.peak.get(Product::StandardSeat), 10);
    assert_eq!(shrink.after.seats.get(Product::StandardSeat), 4);

    // Back up to 8 in the same month: still below the peak, so no extra cost this month.
    let regrow = cart(
        &shrink.after,
        &[change(Product::StandardSeat, 8)],
        march,
        &prices,
    )
    .expect("valid cart");
    assert_eq!((regrow.this_month, regrow.next_month), (0, 4 * 2900));

    // Next month starts from the reduced count.
    let april = cart(
        &regrow.after,
        &[change(Product::StandardSeat, 9)],
        month("2026-04"),
        &prices,
    )
    .expect("valid");
    assert_eq!(
        april.closed,
        Some(ClosedPeak {
            month: march,
            peak: Seats([0, 10, 0, 0, 0, 2]),
            end: Seats([0, 8, 0, 0, 0, 2]),
            peak_in_use: Seats::NONE,
            end_in_use: Seats::NONE,
        })
    );
    assert_eq!(april.after.peak.get(Product::StandardSeat), 9);
    assert_eq!(april.this_month, 2900);

    // Unchanged products get no line and do not move the revision.
    let same = cart(
        &april.after,
        &[change(Product::StandardSeat, 9)],
        month("2026-04"),
        &prices,
    )
    .expect("valid");
    assert!(same.lines.is_empty());
    assert_eq!(same.after.revision, april.after.revision);
}

#[test]
fn months_without_changes_are_billed_at_the_counts_carried_through_them() {
    let mut inventory = Inventory::new(month("2026-11"));
    inventory.seats = Seats([0, 3, 0, 0, 0, 0]);
    inventory.peak = Seats([0, 5, 0, 0, 0, 0]);
    let closed = inventory
        .roll_to(month("2027-02"))
        .expect("November closed");
    let months: Vec<String> = ["2026-10", "2026-11", "2026-12", "2027-01"]
        .into_iter()
        .map(|m| {
            let peak = ClosedPeak::peak_of(month(m), Some(&closed).filter(|c| c.month <= month(m)));
            format!("{m} {}", peak.get(Product::StandardSeat))
        })
        .collect();
    assert_eq!(months, ["2026-10 0", "2026-11 5", "2026-12 3", "2027-01 3"]);
    assert_eq!(
        inventory.roll_to(month("2026-05")),
        None,
        "a clock going back closes nothing"
    );
}

#[test]
fn rolling_over_centuries_returns_one_month() {
    let mut inventory = Inventory::new(month("2000-01"));
    inventory.seats = Seats([0, 3, 0, 0, 0, 0]);
    let closed = inventory.roll_to(month("2199-12")).expect("closed");
    assert_eq!(closed.month, month("2000-01"));
    assert_eq!(inventory.month, month("2199-12"));
}

#[test]
fn carts_are_refused_below_the_seats_in_use_or_with_a_product_twice() {
    let prices = prices();
    let march = month("2026-03");
    let mut inventory = Inventory::new(march);
    inventory.seats = Seats([0, 5, 0, 0, 0, 0]);
    inventory.in_use = Seats([0, 3, 0, 0, 0, 0]);
    assert_eq!(
        cart(
            &inventory,
            &[change(Product::StandardSeat, 2)],
            march,
            &prices
        ),
        Err(CartError::BelowInUse {
            product: Product::StandardSeat,
            requested: 2,
            in_use: 3
        })
    );
    assert!(
        cart(
            &inventory,
            &[change(Product::StandardSeat, 3)],
            march,
            &prices
        )
        .is_ok()
    );
    let error = cart(
        &inventory,
        &[
            change(Product::StandardSeat, 6),
            change(Product::StandardSeat, 7),
        ],
        march,
        &prices,
    )
    .expect_err("duplicate accepted");
    assert_eq!(
        error.to_string(),
        "invalid changes[1].product STANDARD_SEAT: duplicates changes[0].product"
    );
}

/// Seats in use peak like seats bought: March holds 3, then 5, then 2 STANDARD seats (peak 5,
/// end 2); April starts at 2 and rises to 4; June (no record of May) asks over March to June.
/// Peaks: March 5, April 4, May what April ended with (4), June's current 4: 5 over all four,
/// 4 from April on, 4 in June alone.
#[test]
fn the_peak_in_use_is_kept_per_month_and_read_over_a_window() {
    let prices = prices();
    let (march, april, may, june) = (
        month("2026-03"),
        month("2026-04"),
        month("2026-05"),
        month("2026-06"),
    );
    let standard = |n: u32| Seats([0, n, 0, 0, 0, 0]);
    let mut inventory = Inventory::new(march);
    inventory.seats = standard(10);
    let hold = |inventory: &Inventory, from: u32, to: u32, month| {
        hold_seats(
            inventory,
            standard(from),
            standard(to),
            month,
            false,
            &prices,
        )
        .expect("free seats")
    };
    let mut closed = Vec::new();
    for (from, to, when) in [(0, 3, march), (3, 5, march), (5, 2, march), (2, 4, april)] {
        let cart = hold(&inventory, from, to, when);
        closed.extend(cart.closed);
        inventory = cart.after;
    }
    assert_eq!(inventory.in_use, standard(4));
    assert_eq!(inventory.peak_in_use, standard(4));
    let [march_peak] = closed.as_slice() else {
        panic!("one month closed: {closed:?}");
    };
    assert_eq!(march_peak.peak_in_use, standard(5));
    assert_eq!(march_peak.end_in_use, standard(2));

    // The account's inventory is still April's (nothing changed since); June is asked about.
    let current = inventory;
    assert_eq!(peak_in_use(&current, &closed, march, june), standard(5));
    assert_eq!(peak_in_use(&current, &closed, april, june), standard(4));
    assert_eq!(peak_in_use(&current, &closed, june, june), standard(4));
    // Rolled into June, April's record says 4 at its peak and at its end.
    let rolled = current.as_of(june);
    let april_closed = ClosedPeak {
        month: april,
        peak: standard(10),
        end: standard(10),
        peak_in_use: standard(4),
        end_in_use: standard(4),
    };
    let kept = [*march_peak, april_closed];
    assert_eq!(peak_in_use(&rolled, &kept, may, june), standard(4));
    assert_eq!(peak_in_use(&rolled, &kept, march, march), standard(5));
    // Before the account's first month: nothing held.
    assert_eq!(
        peak_in_use(&rolled, &kept, month("2026-01"), month("2026-02")),
        Seats::NONE
    );
}

fn resolution(permissions: Vec<Permission>, daily: bool) -> Resolution {
    let settings = MemberSettings::new(MemberSettingsInput {
        permissions,
        billing_preference: if daily {
            BillingMode::Daily
        } else {
            BillingMode::Monthly
        },
        ..Default::default()
    })
    .expect("valid");
    resolve(&settings, RecordingRetention::default(), &prices())
}

#[test]
fn members_hold_a_seat_of_their_tier_only_when_billed_monthly() {
    let monthly = Seats::held_by(&resolution(vec![Permission::Statistics], false));
    assert_eq!(monthly, Seats([0, 0, 1, 0, 0, 0]));
    assert_eq!(
        Seats::held_by(&resolution(vec![Permission::Statistics], true)),
        Seats::NONE
    );
    // STANDARD cannot be billed daily: the preference falls back to monthly, and so does the seat.
    assert_eq!(
        Seats::held_by(&resolution(vec![Permission::Communication], true)),
        Seats([0, 1, 0, 0, 0, 0])
    );
}

#[test]
fn holding_a_seat_needs_a_free_one_unless_the_account_grows() {
    let prices = prices();
    let march = month("2026-03");
    let mut inventory = Inventory::new(march);
    inventory.seats = Seats([0, 1, 0, 0, 0, 0]);
    let standard = Seats([0, 1, 0, 0, 0, 0]);
    let professional = Seats([0, 0, 1, 0, 0, 0]);

    let first =
        hold_seats(&inventory, Seats::NONE, standard, march, false, &prices).expect("a free seat");
    assert_eq!(first.after.in_use, standard);
    assert!(first.lines.is_empty());
    assert_eq!(first.after.revision, 2, "seats in use changed");

    let error = hold_seats(&first.after, Seats::NONE, standard, march, false, &prices)
        .expect_err("no seat left");
    assert_eq!(
        error.to_string(),
        "no free seat: 1 STANDARD_SEAT missing (2 needed, 1 bought); buy seats with AdjustInventory or turn on auto_growth"
    );

    // Re-applying a member who keeps their seat needs nothing new.
    assert!(hold_seats(&first.after, standard, standard, march, false, &prices).is_ok());

    // Auto-growth buys the missing seat, priced like a cart.
    let grown =
        hold_seats(&first.after, standard, professional, march, true, &prices).expect("grows");
    assert_eq!(
        grown.lines,
        [CartLine {
            product: Product::ProfessionalSeat,
            from: 0,
            to: 1,
            this_month: 4900,
            next_month: 4900
        }]
    );
    assert_eq!(grown.after.in_use, professional);
    assert_eq!(grown.after.seats, Seats([0, 1, 1, 0, 0, 0]));
}

// ---- model ----

/// The plain model: every change with its time; a month's peak is the count carried into it or
/// any count set during it, whichever is highest.
fn model_peak(
    zone: &Zone,
    changes: &[(Timestamp, Product, u32)],
    month: BillingMonth,
    product: Product,
) -> u32 {
    let start = zone.start_of(month);
    let carried = changes
        .iter()
        .rfind(|(at, p, _)| *p == product && *at < start)
        .map_or(0, |(_, _, n)| *n);
    changes
        .iter()
        .filter(|(at, p, _)| *p == product && zone.month(*at) == month)
        .map(|(_, _, n)| *n)
        .fold(carried, u32::max)
}

use jiff::{Timestamp, ToSpan};

fn zone() -> impl Strategy<Value = Zone> {
    proptest::sample::select(vec![
        "UTC",
        "Europe/Prague",
        "America/Los_Angeles",
        "Asia/Kolkata",
        "Australia/Lord_Howe",
    ])
    .prop_map(|name| Zone::new(name).expect("known zone"))
}

fn product() -> impl Strategy<Value = Product> {
    proptest::sample::select(Product::ALL.to_vec())
}

proptest! {
    #[test]
    fn peaks_match_the_plain_model(
        zone in zone(),
        steps in proptest::collection::vec((0i64..20 * 24 * 60, product(), 0u32..30), 1..40),
    ) {
        let prices = prices();
        // Start an hour before a month end in the zone, then move forward by random minutes.
        let first = zone.start_of(BillingMonth::parse("2026-10").expect("valid")) - 1.hour();
        let mut at = first;
        let mut inventory = Inventory::new(zone.month(first));
        let mut closed: BTreeMap<BillingMonth, ClosedPeak> = BTreeMap::new();
        let mut history = Vec::new();
        for (minutes, product, seats) in steps {
            at += minutes.minutes();
            let month = zone.month(at);
            let cart = cart(&inventory, &[SeatChange { product, seats }], month, &prices).expect("no seats in use");
            if let Some(c) = cart.closed {
                prop_assert!(closed.insert(c.month, c).is_none(), "{} closed twice", c.month);
            }
            // This month's effect is the rise of the peak; never negative.
            prop_assert!(cart.this_month >= 0);
            inventory = cart.after;
            history.push((at, product, seats));
        }
        // Every month from the first to the current one is accounted for exactly once.
        let mut month = zone.month(first);
        while month < inventory.month {
            let latest = closed.range(..=month).next_back().map(|(_, c)| c);
            prop_assert!(latest.is_some(), "nothing closed at or before {month}");
            let peak = ClosedPeak::peak_of(month, latest);
            for product in Product::ALL {
                prop_assert_eq!(
                    peak.get(product),
                    model_peak(&zone, &history, month, product),
                    "{} {}", month, product
                );
            }
            month = month.next();
        }
        for product in Product::ALL {
            prop_assert_eq!(inventory.peak.get(product), model_peak(&zone, &history, inventory.month, product));
        }
    }
}
