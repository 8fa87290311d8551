//! Seat inventory (SPEC 4): seats per product, the seats members hold, peak billing per month,
//! and the cart that changes the seat counts.
//!
//! A month is billed at the highest seat count set at any moment in it. A month's peak starts at
//! the count carried into it; raising the count raises the peak, lowering it does not lower the
//! peak but the next month starts from the lower count.

use std::fmt;

use crate::{
    calendar::BillingMonth,
    member::BillingMode,
    price::PriceList,
    resolve::{AddOn, Resolution},
    tier::Tier,
};

/// Something an account buys seats of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Product {
    /// A DASHBOARD seat.
    DashboardSeat,
    /// A STANDARD seat.
    StandardSeat,
    /// A PROFESSIONAL seat.
    ProfessionalSeat,
    /// An ENTERPRISE seat.
    EnterpriseSeat,
    /// A DEVELOPER seat.
    DeveloperSeat,
    /// The outbound add-on seat.
    OutboundSeat,
}

impl Product {
    /// Every seat product, in contract order.
    pub const ALL: [Product; 6] = [
        Product::DashboardSeat,
        Product::StandardSeat,
        Product::ProfessionalSeat,
        Product::EnterpriseSeat,
        Product::DeveloperSeat,
        Product::OutboundSeat,
    ];

    /// The seat product of `tier`.
    pub fn seat(tier: Tier) -> Product {
        Product::ALL[tier.index()]
    }

    /// Position in [`Product::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The product's name as the contract spells it.
    pub fn name(self) -> &'static str {
        match self {
            Product::DashboardSeat => "DASHBOARD_SEAT",
            Product::StandardSeat => "STANDARD_SEAT",
            Product::ProfessionalSeat => "PROFESSIONAL_SEAT",
            Product::EnterpriseSeat => "ENTERPRISE_SEAT",
            Product::DeveloperSeat => "DEVELOPER_SEAT",
            Product::OutboundSeat => "OUTBOUND_SEAT",
        }
    }

    /// The monthly price of one seat.
    pub fn monthly_price(self, prices: &PriceList) -> i64 {
        match self {
            Product::OutboundSeat => prices.outbound_seat_monthly(),
            Product::DashboardSeat => prices.seat_monthly(Tier::Dashboard),
            Product::StandardSeat => prices.seat_monthly(Tier::Standard),
            Product::ProfessionalSeat => prices.seat_monthly(Tier::Professional),
            Product::EnterpriseSeat => prices.seat_monthly(Tier::Enterprise),
            Product::DeveloperSeat => prices.seat_monthly(Tier::Developer),
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A count per product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seats(pub [u32; 6]);

impl Seats {
    /// No seats.
    pub const NONE: Seats = Seats([0; 6]);

    /// The count of `product`.
    pub fn get(&self, product: Product) -> u32 {
        self.0[product.index()]
    }

    /// Sets the count of `product`.
    pub fn set(&mut self, product: Product, count: u32) {
        self.0[product.index()] = count;
    }

    /// The seats a member with this licence holds: one of their tier when billed monthly
    /// (daily-billed members pay per day and hold none), and one outbound seat with outbound
    /// calling, whatever the billing mode.
    pub fn held_by(resolution: &Resolution) -> Seats {
        let mut seats = Seats::NONE;
        if resolution.billing.effective == BillingMode::Monthly {
            seats.set(Product::seat(resolution.tier), 1);
        }
        if resolution
            .add_ons()
            .iter()
            .any(|a| a.add_on == AddOn::Outbound)
        {
            seats.set(Product::OutboundSeat, 1);
        }
        seats
    }
}

/// An account's seats, the current month's peak and a revision that changes with every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inventory {
    /// Seats bought.
    pub seats: Seats,
    /// Seats held by members.
    pub in_use: Seats,
    /// The month `peak` belongs to.
    pub month: BillingMonth,
    /// The highest seat count of each product at any moment of `month`.
    pub peak: Seats,
    /// The most seats of each product held by members at any moment of `month`.
    pub peak_in_use: Seats,
    /// Changes whenever seats or seats in use change; a cart confirm must name the current one.
    pub revision: u64,
}

/// A month that ended, with the peak it is billed at and the counts it ended with. The months
/// after it up to the next closed one saw no change: each is billed at `end` (see
/// [`ClosedPeak::peak_of`]), so nothing needs to be kept for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedPeak {
    /// The month.
    pub month: BillingMonth,
    /// Its peak per product.
    pub peak: Seats,
    /// The counts at its end, carried into the months after it.
    pub end: Seats,
    /// The most seats held by members at any moment of it.
    pub peak_in_use: Seats,
    /// The seats held at its end, carried into the months after it.
    pub end_in_use: Seats,
}

impl ClosedPeak {
    /// The peak `month` is billed at, given the latest closed month at or before it (`None`:
    /// there is none, the month precedes the inventory). Only for months before the current
    /// inventory's month.
    pub fn peak_of(month: BillingMonth, latest: Option<&ClosedPeak>) -> Seats {
        match latest {
            Some(closed) if closed.month == month => closed.peak,
            Some(closed) if closed.month < month => closed.end,
            _ => Seats::NONE,
        }
    }
}

/// The most seats of each product held by members in any month from `first` to `last`, both
/// included: the current inventory's months from it, earlier ones from `closed` (the kept
/// months up to `last`, ascending, starting with the latest one at or before `first` if there is
/// one; a month without its own record held what the latest one before it ended with, and a
/// month before any held nothing).
pub fn peak_in_use(
    inventory: &Inventory,
    closed: &[ClosedPeak],
    first: BillingMonth,
    last: BillingMonth,
) -> Seats {
    let mut peak = Seats::NONE;
    let mut raise = |seats: Seats| {
        for product in Product::ALL {
            peak.set(product, peak.get(product).max(seats.get(product)));
        }
    };
    let mut month = first;
    while month <= last {
        let held = match month.cmp(&inventory.month) {
            std::cmp::Ordering::Greater => inventory.in_use,
            std::cmp::Ordering::Equal => inventory.peak_in_use,
            std::cmp::Ordering::Less => match closed.iter().rev().find(|c| c.month <= month) {
                Some(c) if c.month == month => c.peak_in_use,
                Some(c) => c.end_in_use,
                None => Seats::NONE,
            },
        };
        raise(held);
        if month.next() == month {
            break;
        }
        month = month.next();
    }
    peak
}

impl Inventory {
    /// An empty inventory starting in `month`. Revisions start at 1, so that a revision is never
    /// the zero an unset request field carries.
    pub fn new(month: BillingMonth) -> Inventory {
        Inventory {
            seats: Seats::NONE,
            in_use: Seats::NONE,
            month,
            peak: Seats::NONE,
            peak_in_use: Seats::NONE,
            revision: 1,
        }
    }

    /// Moves the inventory into `month` if it is later than its own, returning the month left
    /// behind (to be kept for its statement) with its peak and the counts it ended with. Months
    /// between it and `month` saw no change and are billed at those counts: nothing is returned
    /// for them, so moving by a century costs what moving by a day does. The new month's peak
    /// starts at the current counts. An earlier `month` (a clock that went back) changes nothing.
    pub fn roll_to(&mut self, month: BillingMonth) -> Option<ClosedPeak> {
        if month <= self.month {
            return None;
        }
        let closed = ClosedPeak {
            month: self.month,
            peak: self.peak,
            end: self.seats,
            peak_in_use: self.peak_in_use,
            end_in_use: self.in_use,
        };
        self.month = month;
        self.peak = self.seats;
        self.peak_in_use = self.in_use;
        Some(closed)
    }

    /// The inventory as of `month`, without changing this one.
    pub fn as_of(&self, month: BillingMonth) -> Inventory {
        let mut copy = *self;
        copy.roll_to(month);
        copy
    }

    /// Sets the seat count of `product`, raising the month's peak if needed.
    fn set_seats(&mut self, product: Product, count: u32) {
        self.seats.set(product, count);
        self.peak.set(product, self.peak.get(product).max(count));
    }
}

/// One product's change in a cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CartLine {
    /// The product.
    pub product: Product,
    /// Seats before.
    pub from: u32,
    /// Seats after.
    pub to: u32,
    /// Cost effect on the current month, minor units: the rise of its peak times the price. A
    /// reduction never lowers it.
    pub this_month: i64,
    /// Cost effect on the next month, minor units: `(to - from)` times the price.
    pub next_month: i64,
}

/// A requested change of seat counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatChange {
    /// The product.
    pub product: Product,
    /// The new number of seats.
    pub seats: u32,
}

/// A computed cart: its lines, totals and the inventory it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart {
    /// Lines of the products that change, in product order.
    pub lines: Vec<CartLine>,
    /// Total effect on the current month.
    pub this_month: i64,
    /// Total effect on the next month.
    pub next_month: i64,
    /// The inventory after the change; its revision is the one after confirming.
    pub after: Inventory,
    /// The month the inventory was rolled out of to compute the cart (see [`Inventory::roll_to`]).
    pub closed: Option<ClosedPeak>,
}

/// Why a cart was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    /// The same product twice.
    #[error("invalid changes[{index}].product {product}: duplicates changes[{first}].product")]
    DuplicateProduct {
        /// Position of the repeat.
        index: usize,
        /// Position of the first mention.
        first: usize,
        /// The product.
        product: Product,
    },
    /// A reduction below the seats members hold.
    #[error("cannot reduce {product} to {requested}: {in_use} in use")]
    BelowInUse {
        /// The product.
        product: Product,
        /// The requested count.
        requested: u32,
        /// Seats held.
        in_use: u32,
    },
}

/// The largest seat count of one product.
pub const MAX_SEATS: u32 = 1_000_000;

/// Computes the cart that sets `changes` on `inventory` during `month`. Products not named keep
/// their counts; products whose count does not change get no line.
pub fn cart(
    inventory: &Inventory,
    changes: &[SeatChange],
    month: BillingMonth,
    prices: &PriceList,
) -> Result<Cart, CartError> {
    let mut seen: [Option<usize>; 6] = [None; 6];
    for (index, change) in changes.iter().enumerate() {
        if let Some(first) = seen[change.product.index()] {
            return Err(CartError::DuplicateProduct {
                index,
                first,
                product: change.product,
            });
        }
        seen[change.product.index()] = Some(index);
    }
    let mut after = *inventory;
    let closed = after.roll_to(month);
    for change in changes {
        let in_use = after.in_use.get(change.product);
        if change.seats < in_use && change.seats < after.seats.get(change.product) {
            return Err(CartError::BelowInUse {
                product: change.product,
                requested: change.seats,
                in_use,
            });
        }
    }
    let mut lines = Vec::new();
    let before = after;
    for product in Product::ALL {
        let Some(index) = seen[product.index()] else {
            continue;
        };
        let to = changes[index].seats;
        let from = before.seats.get(product);
        if to == from {
            continue;
        }
        after.set_seats(product, to);
        let price = product.monthly_price(prices);
        // Seats are at most MAX_SEATS and prices at most MAX_PRICE: these products cannot
        // overflow, but they saturate rather than trust that.
        let peak_rise =
            i64::from(after.peak.get(product)).saturating_sub(i64::from(before.peak.get(product)));
        lines.push(CartLine {
            product,
            from,
            to,
            this_month: peak_rise.saturating_mul(price),
            next_month: i64::from(to)
                .saturating_sub(i64::from(from))
                .saturating_mul(price),
        });
    }
    if !lines.is_empty() {
        after.revision = after.revision.saturating_add(1);
    }
    Ok(Cart {
        this_month: lines
            .iter()
            .map(|l| l.this_month)
            .fold(0, i64::saturating_add),
        next_month: lines
            .iter()
            .map(|l| l.next_month)
            .fold(0, i64::saturating_add),
        lines,
        after,
        closed,
    })
}

/// Seats a member's apply needs beyond those free: per product, how many are missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe_missing(.missing))]
pub struct SeatsMissing {
    /// `(product, seats in use after the apply, seats bought)`, for each short product.
    pub missing: Vec<(Product, u32, u32)>,
}

fn describe_missing(missing: &[(Product, u32, u32)]) -> String {
    let parts: Vec<String> = missing
        .iter()
        .map(|(product, needed, seats)| {
            format!(
                "{} {product} missing ({needed} needed, {seats} bought)",
                needed.saturating_sub(*seats)
            )
        })
        .collect();
    format!(
        "no free seat: {}; buy seats with AdjustInventory or turn on auto_growth",
        parts.join(", ")
    )
}

/// The inventory after a member goes from holding `old` to holding `new` seats, during `month`.
/// Seats the member already holds are kept. A shortfall is refused, unless `auto_growth`, where
/// the seat counts grow to cover it: the growth is returned as a cart.
pub fn hold_seats(
    inventory: &Inventory,
    old: Seats,
    new: Seats,
    month: BillingMonth,
    auto_growth: bool,
    prices: &PriceList,
) -> Result<Cart, SeatsMissing> {
    let mut start = *inventory;
    let closed = start.roll_to(month);
    let mut in_use = start.in_use;
    for product in Product::ALL {
        let count = in_use.get(product).saturating_add(new.get(product));
        in_use.set(product, count.saturating_sub(old.get(product)));
    }
    let short: Vec<(Product, u32, u32)> = Product::ALL
        .into_iter()
        .filter(|&p| new.get(p) > old.get(p) && in_use.get(p) > start.seats.get(p))
        .map(|p| (p, in_use.get(p), start.seats.get(p)))
        .collect();
    if !short.is_empty() && !auto_growth {
        return Err(SeatsMissing { missing: short });
    }
    let growth: Vec<SeatChange> = short
        .iter()
        .map(|&(product, needed, _)| SeatChange {
            product,
            seats: needed,
        })
        .collect();
    // Growth only raises counts, so the cart cannot be refused.
    let mut grown = match cart(&start, &growth, month, prices) {
        Ok(cart) => cart,
        Err(_) => return Err(SeatsMissing { missing: short }),
    };
    grown.closed = closed;
    if grown.after.in_use != in_use {
        grown.after.in_use = in_use;
        for product in Product::ALL {
            let peak = grown
                .after
                .peak_in_use
                .get(product)
                .max(in_use.get(product));
            grown.after.peak_in_use.set(product, peak);
        }
        if grown.lines.is_empty() {
            grown.after.revision = grown.after.revision.saturating_add(1);
        }
    }
    Ok(grown)
}

#[cfg(test)]
mod tests;
