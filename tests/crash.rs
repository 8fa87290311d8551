//! Crash safety, end to end: the real `licensing` binary is killed with SIGKILL at random moments
//! while a client applies and removes members and confirms carts. After every restart each
//! acknowledged change must be there, and no change may be half-applied.
//!
//! The client keeps a model of what the service acknowledged: each member's settings, each
//! account's seat counts and peaks, and the length of its audit trail. It predicts every answer
//! (an apply without a free seat is refused, a stale cart is aborted, ...) and checks it, so the
//! model stays exact while the server lives. The one call in flight at the kill may or may not have
//! been applied: after the restart the stored state must equal the model either without that call
//! or with it applied whole, and the model goes on from whichever it is.
//!
//! Each restart also checks what must hold of any state the service writes, whatever it
//! acknowledged: the seats in use equal the seats the stored members' licences hold, no product has
//! fewer seats than are in use, and the audit trail is numbered 1..=n without a gap and replays to
//! exactly the stored members and seat counts, each auto-growth right after the apply that caused
//! it.
//!
//! `CRASH_ROUNDS` sets the number of kills (default 20). The operations follow a seed printed at the
//! start and in every failure; `CRASH_SEED` replays them (the kill moments still depend on timing).

mod support;

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use licensing::api::{self, licensing_service_client::LicensingServiceClient};
use support::Licensing;
use tonic::{
    Code, Status,
    transport::{Channel, Endpoint},
};

/// Kills, unless `CRASH_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: u32 = 20;
/// Every call gets this long: a hung server fails the test instead of hanging it. Generous, so
/// that a busy machine (a flush can take seconds under load) does not fail a correct server.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// The kill comes this many milliseconds after the workload starts (uniformly in the range), so
/// it lands at any point of a call: before the transaction, inside it, during the flush, after.
const KILL_AFTER_MS: std::ops::Range<u64> = 20..300;
/// Member ids are drawn from this many, so members are applied, changed and removed repeatedly.
const MEMBER_POOL: u64 = 30;
/// Small, so that reading the members back crosses page boundaries.
const PAGE_SIZE: u32 = 7;

/// The accounts the workload writes to, with their auto-growth switch. Most operations go to the
/// first, where an apply grows the inventory by itself; in the second an apply needs a seat a cart
/// bought, so refusals (which must write nothing) happen too.
const ACCOUNTS: [(&str, bool); 2] = [("crash-growing", true), ("crash-fixed", false)];
/// Percent of operations that go to the first account.
const GROWING_SHARE: u64 = 75;

/// A count per seat product, in contract order (`Inventory.seats` order).
type Seats = [u32; 6];

const PRODUCTS: [api::Product; 6] = [
    api::Product::DashboardSeat,
    api::Product::StandardSeat,
    api::Product::ProfessionalSeat,
    api::Product::EnterpriseSeat,
    api::Product::DeveloperSeat,
    api::Product::OutboundSeat,
];
/// Position of the outbound add-on seat in [`PRODUCTS`].
const OUTBOUND: usize = 5;
/// The products a cart changes: the seats the profiles below hold.
const CART_PRODUCTS: [usize; 4] = [1, 2, 3, OUTBOUND];

/// xorshift64*: enough randomness to choose operations, and replayable from a seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Zero is the one state xorshift never leaves.
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Member settings the workload applies, with the licence the service must resolve them to. Every
/// profile has role USER (preset {COMMUNICATION}) unless it lists permissions.
struct Profile {
    name: &'static str,
    permissions: &'static [api::Permission],
    skills: &'static [(&'static str, api::Channel)],
    outbound_calling: bool,
    billing_preference: api::BillingMode,
    /// The tier the settings need.
    tier: api::Tier,
    /// Whether the member is billed monthly, holding a seat of their tier.
    billed_monthly: bool,
}

const PROFILES: [Profile; 8] = [
    Profile {
        name: "STANDARD monthly",
        permissions: &[],
        skills: &[("chat-en", api::Channel::Chat)],
        outbound_calling: false,
        billing_preference: api::BillingMode::Monthly,
        tier: api::Tier::Standard,
        billed_monthly: true,
    },
    Profile {
        name: "STANDARD monthly with outbound",
        permissions: &[],
        skills: &[("voice-en", api::Channel::Voice)],
        outbound_calling: true,
        billing_preference: api::BillingMode::Monthly,
        tier: api::Tier::Standard,
        billed_monthly: true,
    },
    Profile {
        // Daily billing is only for PROFESSIONAL and ENTERPRISE: still a monthly seat.
        name: "STANDARD preferring daily",
        permissions: &[],
        skills: &[("email-en", api::Channel::Email)],
        outbound_calling: false,
        billing_preference: api::BillingMode::Daily,
        tier: api::Tier::Standard,
        billed_monthly: true,
    },
    Profile {
        name: "PROFESSIONAL monthly",
        permissions: &[],
        skills: &[
            ("voice-en", api::Channel::Voice),
            ("email-en", api::Channel::Email),
        ],
        outbound_calling: false,
        billing_preference: api::BillingMode::Monthly,
        tier: api::Tier::Professional,
        billed_monthly: true,
    },
    Profile {
        name: "PROFESSIONAL monthly with outbound",
        permissions: &[],
        skills: &[
            ("voice-en", api::Channel::Voice),
            ("chat-en", api::Channel::Chat),
        ],
        outbound_calling: true,
        billing_preference: api::BillingMode::Monthly,
        tier: api::Tier::Professional,
        billed_monthly: true,
    },
    Profile {
        name: "PROFESSIONAL daily",
        permissions: &[api::Permission::Communication, api::Permission::Statistics],
        skills: &[("email-en", api::Channel::Email)],
        outbound_calling: false,
        billing_preference: api::BillingMode::Daily,
        tier: api::Tier::Professional,
        billed_monthly: false,
    },
    Profile {
        // Holds the outbound seat but no tier seat.
        name: "PROFESSIONAL daily with outbound",
        permissions: &[],
        skills: &[
            ("voice-en", api::Channel::Voice),
            ("sms-en", api::Channel::Sms),
        ],
        outbound_calling: true,
        billing_preference: api::BillingMode::Daily,
        tier: api::Tier::Professional,
        billed_monthly: false,
    },
    Profile {
        name: "ENTERPRISE monthly",
        permissions: &[api::Permission::Communication, api::Permission::Workspace],
        skills: &[("voice-en", api::Channel::Voice)],
        outbound_calling: false,
        billing_preference: api::BillingMode::Monthly,
        tier: api::Tier::Enterprise,
        billed_monthly: true,
    },
];

impl Profile {
    fn settings(&self) -> api::MemberSettings {
        api::MemberSettings {
            role: api::Role::User as i32,
            permissions: self.permissions.iter().map(|&p| p as i32).collect(),
            skills: self
                .skills
                .iter()
                .map(|&(id, channel)| api::Skill {
                    id: id.to_owned(),
                    channel: channel as i32,
                })
                .collect(),
            track_statistics: false,
            call_recording: false,
            outbound_calling: self.outbound_calling,
            billing_preference: self.billing_preference as i32,
        }
    }

    /// The seats a member with this profile holds.
    fn holds(&self) -> Seats {
        let mut seats = [0; 6];
        if self.billed_monthly {
            seats[self.tier as usize - 1] = 1;
        }
        if self.outbound_calling {
            seats[OUTBOUND] = 1;
        }
        seats
    }
}

/// Names settings by their profile, for readable failures.
fn describe(settings: &api::MemberSettings) -> String {
    PROFILES
        .iter()
        .find(|p| p.settings() == *settings)
        .map_or_else(|| format!("{settings:?}"), |p| p.name.to_owned())
}

fn show(seats: &Seats) -> String {
    PRODUCTS
        .iter()
        .zip(seats)
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| format!("{}={n}", p.as_str_name()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A stored member as the model knows it.
#[derive(Debug, Clone, PartialEq)]
struct Holding {
    /// The settings applied, as the acknowledgement echoed them.
    settings: api::MemberSettings,
    /// The seats they hold.
    seats: Seats,
}

/// What the service acknowledged for one account.
#[derive(Debug, Clone, PartialEq)]
struct AccountModel {
    id: &'static str,
    auto_growth: bool,
    members: BTreeMap<String, Holding>,
    seats: Seats,
    /// The highest seat count of each product this month.
    peak: Seats,
    /// The month `peak` belongs to, "YYYY-MM".
    month: String,
    /// Entries in the audit trail.
    audit_entries: u64,
}

impl AccountModel {
    fn in_use(&self) -> Seats {
        let mut in_use = [0; 6];
        for holding in self.members.values() {
            for (total, held) in in_use.iter_mut().zip(holding.seats) {
                *total += held;
            }
        }
        in_use
    }

    fn set_seats(&mut self, product: usize, count: u32) {
        self.seats[product] = count;
        self.peak[product] = self.peak[product].max(count);
    }
}

/// One write of the workload.
#[derive(Debug, Clone)]
enum Op {
    Apply {
        account: usize,
        member: String,
        profile: usize,
    },
    Remove {
        account: usize,
        member: String,
    },
    /// A cart confirm; `stale` names a revision other than the current one on purpose.
    Confirm {
        account: usize,
        product: usize,
        seats: u32,
        revision: u64,
        stale: bool,
    },
}

impl Op {
    fn account(&self) -> usize {
        match self {
            Op::Apply { account, .. }
            | Op::Remove { account, .. }
            | Op::Confirm { account, .. } => *account,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let account = ACCOUNTS[self.account()].0;
        match self {
            Op::Apply {
                member, profile, ..
            } => write!(f, "apply {} to {account}/{member}", PROFILES[*profile].name),
            Op::Remove { member, .. } => write!(f, "remove {account}/{member}"),
            Op::Confirm {
                product,
                seats,
                revision,
                stale,
                ..
            } => write!(
                f,
                "confirm {account} {}={seats} at {}revision {revision}",
                PRODUCTS[*product].as_str_name(),
                if *stale { "stale " } else { "" }
            ),
        }
    }
}

/// The account after `op`, or the code the service must refuse it with (writing nothing).
fn predict(account: &AccountModel, op: &Op) -> Result<AccountModel, Code> {
    let mut after = account.clone();
    match op {
        Op::Apply {
            member, profile, ..
        } => {
            let profile = &PROFILES[*profile];
            let old = account.members.get(member).map_or([0; 6], |h| h.seats);
            let new = profile.holds();
            let mut in_use = account.in_use();
            let mut grown = false;
            for p in 0..PRODUCTS.len() {
                in_use[p] = in_use[p] + new[p] - old[p];
                // Only a seat the member did not hold before can be short.
                if new[p] > old[p] && in_use[p] > account.seats[p] {
                    if !account.auto_growth {
                        return Err(Code::FailedPrecondition);
                    }
                    // Auto-growth raises the count to exactly what is in use.
                    after.set_seats(p, in_use[p]);
                    grown = true;
                }
            }
            after.members.insert(
                member.clone(),
                Holding {
                    settings: profile.settings(),
                    seats: new,
                },
            );
            // The member change, then the growth it caused as its own entry.
            after.audit_entries += 1 + u64::from(grown);
        }
        Op::Remove { member, .. } => {
            if after.members.remove(member).is_none() {
                return Err(Code::NotFound);
            }
            // Seats stay bought: removing frees them for the next member.
            after.audit_entries += 1;
        }
        Op::Confirm {
            product,
            seats,
            stale,
            ..
        } => {
            if *stale {
                return Err(Code::Aborted);
            }
            let current = account.seats[*product];
            if *seats < account.in_use()[*product] && *seats < current {
                return Err(Code::FailedPrecondition);
            }
            // A cart that changes nothing is confirmed without an entry.
            if *seats != current {
                after.set_seats(*product, *seats);
                after.audit_entries += 1;
            }
        }
    }
    Ok(after)
}

/// A successful answer to a write, checked against the model.
enum Ack {
    Applied(Box<api::ResolveMemberResponse>),
    Removed(Box<api::RemoveMemberResponse>),
    Confirmed(Box<api::AdjustInventoryResponse>),
}

async fn send(client: &mut LicensingServiceClient<Channel>, op: &Op) -> Result<Ack, Status> {
    let account_id = ACCOUNTS[op.account()].0.to_owned();
    match op {
        Op::Apply {
            member, profile, ..
        } => client
            .resolve_member(api::ResolveMemberRequest {
                account_id,
                member_id: member.clone(),
                settings: Some(PROFILES[*profile].settings()),
                apply: true,
            })
            .await
            .map(|r| Ack::Applied(Box::new(r.into_inner()))),
        Op::Remove { member, .. } => client
            .remove_member(api::RemoveMemberRequest {
                account_id,
                member_id: member.clone(),
            })
            .await
            .map(|r| Ack::Removed(Box::new(r.into_inner()))),
        Op::Confirm {
            product,
            seats,
            revision,
            ..
        } => client
            .adjust_inventory(api::AdjustInventoryRequest {
                account_id,
                changes: vec![api::SeatChange {
                    product: PRODUCTS[*product] as i32,
                    seats: *seats,
                }],
                confirm: true,
                revision: *revision,
            })
            .await
            .map(|r| Ack::Confirmed(Box::new(r.into_inner()))),
    }
}

/// Checks an acknowledgement says what the model predicted.
fn check_ack(
    op: &Op,
    ack: &Ack,
    before: &AccountModel,
    after: &AccountModel,
) -> Result<(), String> {
    match (op, ack) {
        (
            Op::Apply {
                member, profile, ..
            },
            Ack::Applied(response),
        ) => {
            let profile = &PROFILES[*profile];
            let stored = response
                .member
                .as_ref()
                .filter(|_| response.applied)
                .ok_or("the answer has no applied member")?;
            if stored.member_id != *member || stored.settings != Some(profile.settings()) {
                return Err(format!("the answer stored {stored:?}"));
            }
            let licence = stored.licence.as_ref();
            if licence.map(|l| l.tier) != Some(profile.tier as i32) {
                return Err(format!(
                    "the licence is {licence:?}, not {:?}",
                    profile.tier
                ));
            }
            let held = seats_held(licence)?;
            if held != profile.holds() {
                return Err(format!(
                    "the licence holds [{}], the profile [{}]",
                    show(&held),
                    show(&profile.holds())
                ));
            }
        }
        (Op::Remove { member, .. }, Ack::Removed(response)) => {
            let removed = response.removed.as_ref().ok_or("no removed member")?;
            let acknowledged = before.members.get(member).map(|h| &h.settings);
            if removed.settings.as_ref() != acknowledged {
                return Err(format!(
                    "removed {removed:?}, but the acknowledged settings were {acknowledged:?}"
                ));
            }
        }
        (Op::Confirm { .. }, Ack::Confirmed(response)) => {
            let (seats, in_use, _) = counts(response.inventory.as_ref())?;
            if !response.confirmed || seats != after.seats || in_use != after.in_use() {
                return Err(format!(
                    "confirmed {}: seats [{}] in use [{}], expected seats [{}] in use [{}]",
                    response.confirmed,
                    show(&seats),
                    show(&in_use),
                    show(&after.seats),
                    show(&after.in_use())
                ));
            }
        }
        _ => return Err("the answer is of another call".to_owned()),
    }
    Ok(())
}

/// How a round's workload stopped: at the kill, with the model of what was acknowledged.
struct Stopped {
    accounts: Vec<AccountModel>,
    /// The write whose answer the kill cut off: applied or not, nobody knows.
    in_flight: Option<Op>,
    /// Acknowledged writes that changed something.
    writes: u64,
    /// Calls refused as predicted.
    refusals: u64,
}

/// Applies, removes and confirms in a random sequence until the kill cuts a call off. Any answer
/// other than the predicted one before the kill fails the test.
async fn workload(
    mut client: LicensingServiceClient<Channel>,
    mut accounts: Vec<AccountModel>,
    mut rng: Rng,
    killed: Arc<AtomicBool>,
) -> Result<Stopped, String> {
    let (mut writes, mut refusals) = (0, 0);
    loop {
        let account = if rng.chance(GROWING_SHARE) { 0 } else { 1 };
        let member = format!("agent-{:02}", rng.below(MEMBER_POOL));
        let op = match rng.below(100) {
            0..55 => Op::Apply {
                account,
                member,
                profile: rng.below(PROFILES.len() as u64) as usize,
            },
            55..75 => Op::Remove { account, member },
            _ => {
                // A seller's cart: read the inventory, then confirm against its revision.
                let inventory = match read_inventory(&mut client, ACCOUNTS[account].0).await {
                    Ok(inventory) => inventory,
                    Err(_) if killed.load(Ordering::SeqCst) => {
                        return Ok(Stopped {
                            accounts,
                            in_flight: None,
                            writes,
                            refusals,
                        });
                    }
                    Err(e) => return Err(e),
                };
                let model = &accounts[account];
                let (seats, in_use, _) = counts(Some(&inventory))?;
                if seats != model.seats || in_use != model.in_use() {
                    return Err(format!(
                        "{}: the live inventory has seats [{}] in use [{}], the acknowledged \
                         writes give seats [{}] in use [{}]",
                        model.id,
                        show(&seats),
                        show(&in_use),
                        show(&model.seats),
                        show(&model.in_use())
                    ));
                }
                let product = rng.pick(&CART_PRODUCTS);
                let in_use = in_use[product];
                let (count, stale) = match rng.below(10) {
                    0 => (in_use + 1, true),
                    1 if in_use > 0 => (in_use - 1, false),
                    // At or above what is in use: a rise, a reduction, or no change.
                    _ => (in_use + rng.below(4) as u32, false),
                };
                Op::Confirm {
                    account,
                    product,
                    seats: count,
                    revision: if stale {
                        inventory.revision + 1
                    } else {
                        inventory.revision
                    },
                    stale,
                }
            }
        };
        let before = &accounts[account];
        let expected = predict(before, &op);
        match (send(&mut client, &op).await, expected) {
            // Acknowledged: it must be what was predicted, killed or not.
            (Ok(ack), Ok(after)) => {
                check_ack(&op, &ack, before, &after).map_err(|e| format!("{op}: {e}"))?;
                if after.audit_entries > before.audit_entries {
                    writes += 1;
                }
                accounts[account] = after;
            }
            (Ok(_), Err(code)) => {
                return Err(format!(
                    "{op} was acknowledged; it must be refused with {code:?}"
                ));
            }
            (Err(status), Err(code)) if status.code() == code => refusals += 1,
            (Err(_), _) if killed.load(Ordering::SeqCst) => {
                return Ok(Stopped {
                    accounts,
                    in_flight: Some(op),
                    writes,
                    refusals,
                });
            }
            (Err(status), expected) => {
                return Err(format!(
                    "{op} failed with {status:?} before the kill; expected {}",
                    expected.map_or_else(|code| format!("{code:?}"), |_| "success".to_owned())
                ));
            }
        }
    }
}

/// An account as stored, read back through the API.
struct Stored {
    members: Vec<api::Member>,
    inventory: api::Inventory,
    trail: Vec<api::AuditEntry>,
}

async fn read_inventory(
    client: &mut LicensingServiceClient<Channel>,
    account_id: &str,
) -> Result<api::Inventory, String> {
    client
        .get_inventory(api::GetInventoryRequest {
            account_id: account_id.to_owned(),
        })
        .await
        .map_err(|s| format!("GetInventory {account_id}: {s:?}"))?
        .into_inner()
        .inventory
        .ok_or_else(|| format!("GetInventory {account_id}: no inventory"))
}

async fn read_stored(
    client: &mut LicensingServiceClient<Channel>,
    account_id: &str,
) -> Result<Stored, String> {
    let mut members = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_members(api::ListMembersRequest {
                account_id: account_id.to_owned(),
                page_size: PAGE_SIZE,
                page_token,
                tiers: Vec::new(),
            })
            .await
            .map_err(|s| format!("ListMembers {account_id}: {s:?}"))?
            .into_inner();
        members.extend(page.members);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let inventory = read_inventory(client, account_id).await?;
    // The endpoint's timeout covers the answer's start; this one covers the whole stream.
    let trail = tokio::time::timeout(RPC_TIMEOUT, async {
        let mut stream = client
            .read_audit_trail(api::ReadAuditTrailRequest {
                account_id: account_id.to_owned(),
                from: None,
                to: None,
            })
            .await?
            .into_inner();
        let mut trail = Vec::new();
        while let Some(batch) = stream.message().await? {
            trail.extend(batch.entries);
        }
        Ok::<_, Status>(trail)
    })
    .await
    .map_err(|_| format!("ReadAuditTrail {account_id}: no end within {RPC_TIMEOUT:?}"))?
    .map_err(|s| format!("ReadAuditTrail {account_id}: {s:?}"))?;
    Ok(Stored {
        members,
        inventory,
        trail,
    })
}

/// The seats a licence holds: one of its tier when billed monthly, one outbound seat with the
/// outbound add-on. Read from what the service answers, not from the model.
fn seats_held(licence: Option<&api::Licence>) -> Result<Seats, String> {
    let licence = licence.ok_or("a member without a licence")?;
    let mut seats = [0; 6];
    let monthly = licence
        .billing
        .as_ref()
        .is_some_and(|b| b.effective == api::BillingMode::Monthly as i32);
    if monthly {
        let tier = usize::try_from(licence.tier - 1)
            .ok()
            .filter(|&t| t < OUTBOUND)
            .ok_or_else(|| format!("a licence of tier {}", licence.tier))?;
        seats[tier] += 1;
    }
    if licence
        .add_ons
        .iter()
        .any(|a| a.add_on == api::AddOn::Outbound as i32)
    {
        seats[OUTBOUND] += 1;
    }
    Ok(seats)
}

/// Seats, seats in use and peaks of an inventory, checking it lists every product in order.
fn counts(inventory: Option<&api::Inventory>) -> Result<(Seats, Seats, Seats), String> {
    let inventory = inventory.ok_or("no inventory")?;
    let listed: Vec<i32> = inventory.seats.iter().map(|s| s.product).collect();
    if listed != PRODUCTS.map(|p| p as i32) {
        return Err(format!("the inventory lists products {listed:?}"));
    }
    let (mut seats, mut in_use, mut peak) = ([0; 6], [0; 6], [0; 6]);
    for (i, count) in inventory.seats.iter().enumerate() {
        seats[i] = count.seats;
        in_use[i] = count.in_use;
        peak[i] = count.peak_this_month;
    }
    Ok((seats, in_use, peak))
}

/// What must hold of any stored state, acknowledged or not: no half-applied change.
fn check_consistent(account_id: &str, stored: &Stored) -> Result<(), String> {
    let mut problems = Vec::new();
    // The seats in use are the seats the stored members hold.
    let mut held = [0; 6];
    for member in &stored.members {
        if member.account_id != account_id {
            problems.push(format!(
                "member {} of account {}",
                member.member_id, member.account_id
            ));
        }
        for (total, n) in held.iter_mut().zip(seats_held(member.licence.as_ref())?) {
            *total += n;
        }
    }
    if !stored
        .members
        .windows(2)
        .all(|w| w[0].member_id < w[1].member_id)
    {
        problems.push("members are not listed in strictly increasing id order".to_owned());
    }
    let (seats, in_use, peak) = counts(Some(&stored.inventory))?;
    if in_use != held {
        problems.push(format!(
            "in use [{}], but the stored members hold [{}]",
            show(&in_use),
            show(&held)
        ));
    }
    for (p, product) in PRODUCTS.iter().enumerate() {
        if seats[p] < in_use[p] || peak[p] < seats[p] {
            problems.push(format!(
                "{}: {} seats, {} in use, peak {}",
                product.as_str_name(),
                seats[p],
                in_use[p],
                peak[p]
            ));
        }
    }

    // The trail is numbered 1..=n and replays to the stored members and seat counts.
    let mut members: BTreeMap<&str, &api::MemberSettings> = BTreeMap::new();
    let mut replayed = [0; 6];
    let mut previous_member: Option<&str> = None;
    for (i, entry) in stored.trail.iter().enumerate() {
        let sequence = entry.sequence;
        if sequence != i as u64 + 1 {
            problems.push(format!("audit entry {} has sequence {sequence}", i + 1));
            break;
        }
        let mut applied = None;
        match &entry.change {
            Some(api::audit_entry::Change::AccountSettings(change)) if sequence == 1 => {
                if change.before.is_some() {
                    problems.push("the creation entry has settings before".to_owned());
                }
            }
            Some(api::audit_entry::Change::Member(change)) => {
                let (before, after) = (change.before.as_ref(), change.after.as_ref());
                let Some(id) = after.or(before).map(|m| m.member_id.as_str()) else {
                    problems.push(format!("audit {sequence}: a member change of nobody"));
                    continue;
                };
                let recorded = before.and_then(|m| m.settings.as_ref());
                if recorded != members.get(id).copied() {
                    problems.push(format!(
                        "audit {sequence}: {id} before is {:?}, the trail so far has {:?}",
                        recorded.map(describe),
                        members.get(id).map(|s| describe(s))
                    ));
                }
                match after.and_then(|m| m.settings.as_ref()) {
                    Some(settings) => {
                        members.insert(id, settings);
                        applied = Some(id);
                    }
                    None => {
                        members.remove(id);
                    }
                }
            }
            Some(api::audit_entry::Change::Inventory(change)) => {
                // Growth is written in the apply's transaction: right after that member's entry.
                if change.auto_growth && previous_member != Some(change.member_id.as_str()) {
                    problems.push(format!(
                        "audit {sequence}: auto-growth for {:?} does not follow its apply",
                        change.member_id
                    ));
                }
                if change.lines.is_empty() {
                    problems.push(format!(
                        "audit {sequence}: an inventory change without lines"
                    ));
                }
                for line in &change.lines {
                    let Some(p) = PRODUCTS.iter().position(|&x| x as i32 == line.product) else {
                        problems.push(format!("audit {sequence}: product {}", line.product));
                        continue;
                    };
                    if line.from != replayed[p] || (change.auto_growth && line.to <= line.from) {
                        problems.push(format!(
                            "audit {sequence}: {} from {} to {}, the trail so far has {}",
                            PRODUCTS[p].as_str_name(),
                            line.from,
                            line.to,
                            replayed[p]
                        ));
                    }
                    replayed[p] = line.to;
                }
            }
            other => problems.push(format!("audit {sequence}: unexpected change {other:?}")),
        }
        previous_member = applied;
    }
    let listed: BTreeMap<&str, Option<&api::MemberSettings>> = stored
        .members
        .iter()
        .map(|m| (m.member_id.as_str(), m.settings.as_ref()))
        .collect();
    let trailed: BTreeMap<&str, Option<&api::MemberSettings>> =
        members.iter().map(|(&id, &s)| (id, Some(s))).collect();
    if listed != trailed {
        problems.push(format!(
            "the trail ends with members {:?}, the stored members are {:?}",
            trailed.keys().collect::<Vec<_>>(),
            listed.keys().collect::<Vec<_>>()
        ));
    }
    if replayed != seats {
        problems.push(format!(
            "the trail ends with seats [{}], the inventory has [{}]",
            show(&replayed),
            show(&seats)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{account_id} is inconsistent: {}",
            problems.join("; ")
        ))
    }
}

/// Differences between the stored account and a model of it; empty when they are the same.
fn differences(model: &AccountModel, stored: &Stored) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let listed: BTreeMap<&str, &api::Member> = stored
        .members
        .iter()
        .map(|m| (m.member_id.as_str(), m))
        .collect();
    for (id, holding) in &model.members {
        match listed.get(id.as_str()) {
            None => found.push(format!("{id} ({}) is missing", describe(&holding.settings))),
            Some(member) if member.settings.as_ref() != Some(&holding.settings) => {
                found.push(format!(
                    "{id} has {}, acknowledged {}",
                    member
                        .settings
                        .as_ref()
                        .map_or("no settings".to_owned(), describe),
                    describe(&holding.settings)
                ));
            }
            Some(_) => {}
        }
    }
    for id in listed.keys() {
        if !model.members.contains_key(*id) {
            found.push(format!(
                "{id} is stored, but its removal was acknowledged or it never was"
            ));
        }
    }
    let (seats, in_use, peak) = counts(Some(&stored.inventory))?;
    if seats != model.seats {
        found.push(format!(
            "seats [{}], acknowledged [{}]",
            show(&seats),
            show(&model.seats)
        ));
    }
    if in_use != model.in_use() {
        found.push(format!(
            "in use [{}], acknowledged [{}]",
            show(&in_use),
            show(&model.in_use())
        ));
    }
    // Across a month's end the peak restarts; it is only comparable within one month.
    if stored.inventory.month == model.month && peak != model.peak {
        found.push(format!(
            "peaks [{}], acknowledged [{}]",
            show(&peak),
            show(&model.peak)
        ));
    }
    if stored.trail.len() as u64 != model.audit_entries {
        found.push(format!(
            "{} audit entries, acknowledged {}",
            stored.trail.len(),
            model.audit_entries
        ));
    }
    Ok(found)
}

/// After a restart: every account must be consistent and equal its model without the call in
/// flight or with it applied whole; the model goes on from the one it equals. Returns whether the
/// call in flight was found applied, when that made a difference.
async fn verify(
    client: &mut LicensingServiceClient<Channel>,
    accounts: &mut [AccountModel],
    in_flight: Option<&Op>,
) -> Result<Option<bool>, String> {
    let mut outcome = None;
    for (i, model) in accounts.iter_mut().enumerate() {
        let stored = read_stored(client, model.id).await?;
        check_consistent(model.id, &stored)?;
        // The call in flight, when it would change this account: either outcome is acknowledged.
        let uncertain = in_flight
            .filter(|op| op.account() == i)
            .and_then(|op| predict(model, op).ok())
            .filter(|after| after != model);
        let in_doubt = uncertain.is_some();
        let mut candidates = vec![("without the call in flight", model.clone())];
        candidates.extend(uncertain.map(|after| ("with the call in flight applied", after)));
        let mut report = Vec::new();
        let mut matched = None;
        for (n, (label, candidate)) in candidates.into_iter().enumerate() {
            let found = differences(&candidate, &stored)?;
            if found.is_empty() {
                matched = Some((n, candidate));
                break;
            }
            report.push(format!("{label}: {}", found.join("; ")));
        }
        let Some((n, candidate)) = matched else {
            return Err(format!(
                "{} after the restart matches no acknowledged state (in flight: {}):\n  {}",
                model.id,
                in_flight.map_or("nothing".to_owned(), |op| op.to_string()),
                report.join("\n  ")
            ));
        };
        if in_doubt {
            outcome = Some(n == 1);
        }
        *model = candidate;
        if stored.inventory.month != model.month {
            eprintln!(
                "{}: the month turned to {}; peaks restart from here",
                model.id, stored.inventory.month
            );
            model.month = stored.inventory.month.clone();
            model.peak = counts(Some(&stored.inventory))?.2;
        }
    }
    Ok(outcome)
}

async fn connect(endpoint: String) -> Result<LicensingServiceClient<Channel>, String> {
    let channel = Endpoint::from_shared(endpoint)
        .map_err(|e| e.to_string())?
        .connect_timeout(RPC_TIMEOUT)
        .timeout(RPC_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok(LicensingServiceClient::new(channel))
}

/// Creates the accounts (before any kill: their creation is not under test) and their models.
async fn create_accounts(
    client: &mut LicensingServiceClient<Channel>,
) -> Result<Vec<AccountModel>, String> {
    let mut accounts = Vec::new();
    for (id, auto_growth) in ACCOUNTS {
        client
            .create_account(api::CreateAccountRequest {
                account_id: id.to_owned(),
                settings: Some(api::AccountSettings {
                    time_zone: "UTC".to_owned(),
                    auto_growth,
                    ..Default::default()
                }),
                sandbox: false,
                sandbox_clock_start: None,
            })
            .await
            .map_err(|s| format!("CreateAccount {id}: {s:?}"))?;
        let month = read_inventory(client, id).await?.month;
        accounts.push(AccountModel {
            id,
            auto_growth,
            members: BTreeMap::new(),
            seats: [0; 6],
            peak: [0; 6],
            month,
            audit_entries: 1,
        });
    }
    verify(client, &mut accounts, None).await?;
    Ok(accounts)
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn tail(logs: &[String]) -> String {
    logs[logs.len().saturating_sub(20)..].join("\n")
}

#[test]
fn acknowledged_changes_survive_sigkill_and_none_is_half_applied() {
    let rounds = env_number("CRASH_ROUNDS").map_or(DEFAULT_ROUNDS, |n| n as u32);
    let seed = env_number("CRASH_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64
    });
    eprintln!("crash: {rounds} rounds, seed {seed} (CRASH_SEED={seed} replays the operations)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // One database for every round: each restart opens what the kill left.
    let data = tempfile::tempdir().expect("temporary data folder");
    let data_dir = data.path().join("db");
    let mut rng = Rng::new(seed);
    let mut accounts: Vec<AccountModel> = Vec::new();
    let mut in_flight: Option<Op> = None;
    let mut killed_logs: Vec<String> = Vec::new();
    let (mut writes, mut refusals, mut applied, mut not_applied) = (0, 0, 0, 0);
    let started = Instant::now();

    for round in 1..=rounds + 1 {
        let server = Licensing::start_at(data_dir.clone());
        let fail = |message: String, server: &Licensing| -> ! {
            panic!(
                "seed {seed} (CRASH_SEED={seed}), round {round}: {message}\n\
                 --- last logs of the killed server:\n{}\n--- logs of the restarted server:\n{}",
                tail(&killed_logs),
                tail(&server.logs())
            )
        };
        let checked = runtime.block_on(async {
            let mut client = connect(server.endpoint()).await?;
            if accounts.is_empty() {
                accounts = create_accounts(&mut client).await?;
                Ok(None)
            } else {
                verify(&mut client, &mut accounts, in_flight.as_ref()).await
            }
        });
        match checked {
            Ok(Some(true)) => applied += 1,
            Ok(Some(false)) => not_applied += 1,
            Ok(None) => {}
            Err(message) => fail(message, &server),
        }
        // The last start only verifies what the last kill left.
        if round > rounds {
            break;
        }

        let killed = Arc::new(AtomicBool::new(false));
        let client = match runtime.block_on(connect(server.endpoint())) {
            Ok(client) => client,
            Err(message) => fail(message, &server),
        };
        let running = runtime.spawn(workload(
            client,
            accounts.clone(),
            Rng::new(rng.next()),
            killed.clone(),
        ));
        let kill_after = KILL_AFTER_MS.start + rng.below(KILL_AFTER_MS.end - KILL_AFTER_MS.start);
        // Not a wait for readiness: the crash itself, at a random moment of the workload.
        thread::sleep(Duration::from_millis(kill_after));
        killed.store(true, Ordering::SeqCst);
        killed_logs = server.logs();
        server.kill();
        let stopped = runtime
            .block_on(async { tokio::time::timeout(RPC_TIMEOUT * 2, running).await })
            .map_err(|_| "the workload did not stop after the kill".to_owned())
            .and_then(|joined| joined.map_err(|e| format!("the workload panicked: {e}")))
            .and_then(|result| result);
        let stopped = match stopped {
            Ok(stopped) => stopped,
            Err(message) => panic!(
                "seed {seed} (CRASH_SEED={seed}), round {round}: {message}\n\
                 --- last logs of the server:\n{}",
                tail(&killed_logs)
            ),
        };
        eprintln!(
            "round {round}: killed after {kill_after} ms, {} writes, {} refusals, in flight: {}",
            stopped.writes,
            stopped.refusals,
            stopped
                .in_flight
                .as_ref()
                .map_or("nothing".to_owned(), Op::to_string)
        );
        writes += stopped.writes;
        refusals += stopped.refusals;
        accounts = stopped.accounts;
        in_flight = stopped.in_flight;
    }

    eprintln!(
        "crash: {rounds} kills in {:.1?}: {writes} acknowledged writes, {refusals} refusals; the \
         call in flight was found applied {applied} times, not applied {not_applied} times",
        started.elapsed()
    );
    // A workload that never gets a write acknowledged would pass every check above.
    assert!(
        writes >= u64::from(rounds),
        "seed {seed}: only {writes} acknowledged writes in {rounds} rounds"
    );
}
