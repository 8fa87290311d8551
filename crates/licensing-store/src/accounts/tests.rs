//! Store operations on temporary databases: refusals write nothing, carts race, data reopens.

use std::{path::Path, sync::Barrier};

use licensing_core::{
    AccountSettings, Channel, Inventory, MemberSettingsInput, Permission, RecordingRetention,
    Skill, UNAUTHENTICATED, Zone,
};

use super::*;
use crate::StoreConfig;
use licensing_core::price::testing::prices;

/// The store in `dir` (reopened once a store of it dropped before let go of its lock).
fn open(dir: &Path) -> Store {
    crate::open_when_free(&StoreConfig {
        path: dir.join("db"),
        cache_capacity_bytes: 8 << 20,
    })
    .expect("open")
}

fn now() -> Timestamp {
    "2026-03-10T12:00:00Z".parse().expect("timestamp")
}

fn new_account(store: &Store, id: &str, auto_growth: bool) -> Account {
    let zone = Zone::new("Europe/Prague").expect("zone");
    let mut settings = AccountSettings::new(zone.clone());
    settings.auto_growth = auto_growth;
    let account = Account {
        id: id.to_owned(),
        settings,
        sandbox: false,
        created_at: now(),
        clock: None,
        inventory: Inventory::new(zone.month(now())),
        audit_sequence: 0,
    };
    store
        .create_account(account, UNAUTHENTICATED)
        .expect("create account")
}

fn agent() -> MemberSettings {
    MemberSettings::new(MemberSettingsInput {
        permissions: vec![Permission::Communication],
        skills: vec![Skill {
            id: "voice".into(),
            channel: Channel::Voice,
        }],
        ..Default::default()
    })
    .expect("valid")
}

fn seats(store: &Store, account: &str, product: Product, count: u32) {
    let revision = store.account(account).expect("account").inventory.revision;
    store
        .adjust_inventory(
            account,
            &[SeatChange {
                product,
                seats: count,
            }],
            Some(revision),
            now(),
            &prices(),
            "test",
        )
        .expect("confirm");
}

fn trail_len(store: &Store, account: &str) -> usize {
    store.audit_trail(account, 1).count()
}

#[test]
fn accounts_are_created_once_and_read_back_after_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        new_account(&store, "acme", false);
        let again = store.create_account(store.account("acme").expect("account"), UNAUTHENTICATED);
        assert!(matches!(again, Err(OpError::AccountExists(id)) if id == "acme"));
        assert!(matches!(
            store.account("nope"),
            Err(OpError::AccountNotFound(_))
        ));
    }
    let store = open(dir.path());
    let account = store.account("acme").expect("reopened");
    assert_eq!(account.settings.zone.name(), "Europe/Prague");
    let entries: Vec<_> = store
        .audit_trail("acme", 1)
        .map(|e| e.expect("entry"))
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor, UNAUTHENTICATED);
    assert!(matches!(
        entries[0].change,
        Change::AccountSettings { before: None, .. }
    ));
}

#[test]
fn applying_without_a_free_seat_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    new_account(&store, "acme", false);
    seats(&store, "acme", Product::StandardSeat, 1);
    store
        .apply_member("acme", "alice", &agent(), now(), &prices(), "test")
        .expect("first seat");
    let before = store.account("acme").expect("account");
    let entries = trail_len(&store, "acme");

    let error = store
        .apply_member("acme", "bob", &agent(), now(), &prices(), "test")
        .expect_err("no seat");
    assert_eq!(
        error.to_string(),
        "no free seat: 1 STANDARD_SEAT missing (2 needed, 1 bought); buy seats with AdjustInventory or turn on auto_growth"
    );
    assert!(matches!(
        store.member("acme", "bob"),
        Err(OpError::MemberNotFound { .. })
    ));
    assert_eq!(store.account("acme").expect("account"), before);
    assert_eq!(trail_len(&store, "acme"), entries);

    // Re-applying alice keeps her seat.
    store
        .apply_member("acme", "alice", &agent(), now(), &prices(), "test")
        .expect("same seat");
}

#[test]
fn auto_growth_buys_the_seat_and_records_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    new_account(&store, "acme", true);
    let applied = store
        .apply_member("acme", "alice", &agent(), now(), &prices(), "test")
        .expect("grows");
    assert_eq!(applied.growth.len(), 1);
    let inventory = store.account("acme").expect("account").inventory;
    assert_eq!(
        (
            inventory.seats.get(Product::StandardSeat),
            inventory.in_use.get(Product::StandardSeat)
        ),
        (1, 1)
    );
    let last = store
        .audit_trail("acme", 1)
        .last()
        .expect("entries")
        .expect("entry");
    assert_eq!(
        last.change,
        Change::Inventory {
            lines: applied.growth,
            auto_growth_for: Some("alice".into())
        }
    );
}

#[test]
fn carts_preview_without_writing_and_confirm_only_the_current_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    new_account(&store, "acme", false);
    let change = [SeatChange {
        product: Product::ProfessionalSeat,
        seats: 3,
    }];
    let preview = store
        .adjust_inventory("acme", &change, None, now(), &prices(), "test")
        .expect("preview");
    assert!(!preview.confirmed);
    assert_eq!(preview.cart.this_month, 3 * 4900);
    assert_eq!(
        store.account("acme").expect("account").inventory.seats,
        Seats::NONE
    );

    let revision = preview.account.inventory.revision;
    store
        .adjust_inventory("acme", &change, Some(revision), now(), &prices(), "test")
        .expect("confirm");
    let stale = store.adjust_inventory("acme", &change, Some(revision), now(), &prices(), "test");
    assert!(
        matches!(stale, Err(OpError::StaleRevision { named, current }) if named == revision && current == revision + 1)
    );
}

#[test]
fn reductions_below_the_seats_in_use_name_the_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    new_account(&store, "acme", false);
    seats(&store, "acme", Product::StandardSeat, 3);
    for member in ["alice", "bob"] {
        store
            .apply_member("acme", member, &agent(), now(), &prices(), "test")
            .expect("seat");
    }
    let change = [SeatChange {
        product: Product::StandardSeat,
        seats: 1,
    }];
    let error = store
        .adjust_inventory("acme", &change, None, now(), &prices(), "test")
        .expect_err("below in use");
    assert_eq!(
        error.to_string(),
        "cannot reduce STANDARD_SEAT to 1: 2 in use by members alice, bob"
    );
    store
        .remove_member("acme", "bob", now(), &prices(), "test")
        .expect("remove");
    store
        .adjust_inventory("acme", &change, None, now(), &prices(), "test")
        .expect("now fits");
}

#[test]
fn two_confirms_racing_on_one_revision_exactly_one_wins() {
    for round in 0..20 {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        new_account(&store, "acme", false);
        let revision = store.account("acme").expect("account").inventory.revision;
        let barrier = Barrier::new(2);
        let outcomes: Vec<Result<Adjusted, OpError>> = std::thread::scope(|scope| {
            let racers: Vec<_> = [4, 7]
                .into_iter()
                .map(|count| {
                    let (store, barrier) = (&store, &barrier);
                    scope.spawn(move || {
                        let change = [SeatChange {
                            product: Product::StandardSeat,
                            seats: count,
                        }];
                        barrier.wait();
                        store.adjust_inventory(
                            "acme",
                            &change,
                            Some(revision),
                            now(),
                            &prices(),
                            "test",
                        )
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().expect("racer"))
                .collect()
        });
        let winners: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, Err(OpError::StaleRevision { .. }))),
            "round {round}"
        );
        let won = winners[0].cart.after.seats.get(Product::StandardSeat);
        let inventory = store.account("acme").expect("account").inventory;
        assert_eq!(
            inventory.seats.get(Product::StandardSeat),
            won,
            "round {round}"
        );
        assert_eq!(inventory.revision, revision + 1);
        assert_eq!(
            trail_len(&store, "acme"),
            2,
            "round {round}: one creation, one cart"
        );
    }
}

#[test]
fn members_list_in_id_order_within_their_account_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    new_account(&store, "acme", true);
    new_account(&store, "acme2", true);
    for member in ["carol", "alice", "bob"] {
        store
            .apply_member("acme", member, &agent(), now(), &prices(), "test")
            .expect("apply");
    }
    store
        .apply_member("acme2", "zed", &agent(), now(), &prices(), "test")
        .expect("apply");
    let ids = |after| -> Vec<String> {
        store
            .members("acme", after)
            .map(|m| m.expect("member").member_id)
            .collect()
    };
    assert_eq!(ids(None), ["alice", "bob", "carol"]);
    assert_eq!(ids(Some("alice")), ["bob", "carol"]);
}

#[test]
fn advancing_a_clock_by_two_centuries_writes_what_advancing_by_a_month_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let zone = Zone::new("Europe/Prague").expect("zone");
    let start: Timestamp = "2000-01-15T12:00:00Z".parse().expect("timestamp");
    let account = Account {
        id: "sandbox".to_owned(),
        settings: AccountSettings::new(zone.clone()),
        sandbox: true,
        created_at: start,
        clock: Some(start),
        inventory: Inventory::new(zone.month(start)),
        audit_sequence: 0,
    };
    store
        .create_account(account, UNAUTHENTICATED)
        .expect("create");
    let revision = store
        .account("sandbox")
        .expect("account")
        .inventory
        .revision;
    store
        .adjust_inventory(
            "sandbox",
            &[SeatChange {
                product: Product::StandardSeat,
                seats: 4,
            }],
            Some(revision),
            start,
            &prices(),
            "test",
        )
        .expect("confirm");
    let records = |store: &Store| store.peaks.len() + store.audit.len();
    let before = records(&store);
    let far: Timestamp = "2199-12-31T12:00:00Z".parse().expect("timestamp");
    store
        .advance_clock("sandbox", far, "test")
        .expect("advance");
    // One closed month and one audit entry, not one record per month passed.
    assert_eq!(records(&store) - before, 2);
    let month = |m: &str| BillingMonth::parse(m).expect("month");
    assert_eq!(
        store
            .closed_peak("sandbox", month("2000-01"))
            .expect("read"),
        Seats([0, 4, 0, 0, 0, 0])
    );
    assert_eq!(
        store
            .closed_peak("sandbox", month("2123-06"))
            .expect("read"),
        Seats([0, 4, 0, 0, 0, 0]),
        "a month without a change is billed at the counts carried into it"
    );
    assert_eq!(
        store
            .closed_peak("sandbox", month("1999-12"))
            .expect("read"),
        Seats::NONE,
        "nothing before the account"
    );
}

/// Seats in use peak per month and are kept when the month closes: March holds 3 STANDARD
/// seats, then 1 after two removals; April adds one (2). The account reads April's peak in use
/// 2; March's record says peak 3, end 1. An account record of version 1 (before seats in use
/// were kept) reads its peak in use as the month's peak of seats bought.
#[test]
fn seats_in_use_peak_per_month_and_are_kept_when_it_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    new_account(&store, "acme", false);
    seats(&store, "acme", Product::StandardSeat, 5);
    let standard = |n: u32| Seats([0, n, 0, 0, 0, 0]);
    for member in ["a", "b", "c"] {
        store
            .apply_member("acme", member, &agent(), now(), &prices(), "test")
            .expect("seat");
    }
    for member in ["a", "b"] {
        store
            .remove_member("acme", member, now(), &prices(), "test")
            .expect("removed");
    }
    let march = store.account("acme").expect("account").inventory;
    assert_eq!(
        (march.in_use, march.peak_in_use),
        (standard(1), standard(3))
    );
    let april: Timestamp = "2026-04-10T12:00:00Z".parse().expect("timestamp");
    store
        .apply_member("acme", "d", &agent(), april, &prices(), "test")
        .expect("seat");
    let inventory = store.account("acme").expect("account").inventory;
    assert_eq!(
        (inventory.in_use, inventory.peak_in_use),
        (standard(2), standard(2))
    );
    let month = |m: &str| BillingMonth::parse(m).expect("month");
    let kept = store
        .closed_peaks("acme", month("2026-03"), month("2026-04"))
        .expect("peaks");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].month, month("2026-03"));
    assert_eq!(
        (kept[0].peak_in_use, kept[0].end_in_use),
        (standard(3), standard(1))
    );
    // From a later month, the latest kept one before it comes along.
    let later = store
        .closed_peaks("acme", month("2026-06"), month("2026-07"))
        .expect("peaks");
    assert_eq!(later, kept);
    assert_eq!(
        licensing_core::peak_in_use(&inventory, &kept, month("2026-03"), month("2026-04")),
        standard(3)
    );

    // Written as version 1 wrote it.
    let bytes = store.accounts.get("acme").expect("read").expect("account");
    let record: crate::records::AccountRecord =
        crate::records::decode("account", &bytes).expect("record");
    let v1 = record.into_v1();
    store
        .accounts
        .insert("acme", crate::records::encode(&v1))
        .expect("write");
    let old = store.account("acme").expect("account").inventory;
    assert_eq!(old.peak_in_use, old.peak);
    assert_eq!((old.seats, old.in_use), (inventory.seats, inventory.in_use));
}

/// The retention an account says it needs is kept with its settings and in the audit trail's
/// before and after; a settings entry written before it was kept reads as not said.
#[test]
fn the_retention_an_account_needs_is_kept_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let three = RecordingRetention::months(3).expect("retention");
    {
        let store = open(dir.path());
        new_account(&store, "acme", false);
        store
            .update_account("acme", now(), "ops", |s| {
                s.recording_retention_required = Some(three);
                Ok(())
            })
            .expect("updated");
        store
            .update_account("acme", now(), "ops", |s| {
                s.recording_retention_required = Some(RecordingRetention::FOURTEEN_DAYS);
                Ok(())
            })
            .expect("updated");
    }
    let store = open(dir.path());
    assert_eq!(
        store
            .account("acme")
            .expect("account")
            .settings
            .recording_retention_required,
        Some(RecordingRetention::FOURTEEN_DAYS)
    );
    let required: Vec<_> = store
        .audit_trail("acme", 1)
        .map(|e| match e.expect("entry").change {
            Change::AccountSettings { before, after } => (
                before.and_then(|b| b.recording_retention_required),
                after.recording_retention_required,
            ),
            other => panic!("not a settings change: {other:?}"),
        })
        .collect();
    assert_eq!(
        required,
        vec![
            (None, None),
            (None, Some(three)),
            (Some(three), Some(RecordingRetention::FOURTEEN_DAYS)),
        ]
    );

    // The first entry as an older build wrote it, with settings of version 1.
    let (key, _) = store
        .audit
        .scan_prefix(b"acme\0")
        .next()
        .expect("an entry")
        .expect("read");
    let settings = store.account("acme").expect("account").settings;
    let old = crate::records::AuditRecord::V1 {
        time: now().into(),
        actor: "ops".to_owned(),
        change: crate::records::ChangeV1::AccountSettings {
            before: None,
            after: (&settings).into(),
        },
    };
    store
        .audit
        .insert(key, crate::records::encode(&old))
        .expect("write");
    let first = store
        .audit_trail("acme", 1)
        .next()
        .expect("entry")
        .expect("decoded");
    match first.change {
        Change::AccountSettings { before, after } => {
            assert!(before.is_none());
            assert_eq!(after.recording_retention_required, None);
            assert_eq!(after.zone, settings.zone);
        }
        other => panic!("not a settings change: {other:?}"),
    }
}
