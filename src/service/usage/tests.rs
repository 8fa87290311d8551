//! `GetUsage` with `follow`, in process: changes arrive as they are committed, the stream's task
//! ends as soon as the client leaves, without waiting for another change, and one change is read
//! once however many follow it.

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use licensing_store::{Store, StoreConfig};
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::server::TcpIncoming;

use super::*;
use crate::api::licensing_service_client::LicensingServiceClient;
use crate::api::licensing_service_server::LicensingServiceServer;

const DEADLINE: Duration = Duration::from_secs(10);

async fn next(stream: &mut tonic::Streaming<api::GetUsageResponse>) -> Part {
    let message = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("a message in time");
    message
        .expect("stream open")
        .expect("no error")
        .part
        .expect("a part")
}

/// The handlers on a loopback port: them (to look inside), the address, what keeps them alive.
async fn serve() -> (Licensing, String, (tempfile::TempDir, watch::Sender<bool>)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&StoreConfig {
        path: dir.path().join("db"),
        cache_capacity_bytes: 8 << 20,
    })
    .expect("open");
    let prices = Arc::new(crate::price_list::sample().expect("sample prices"));
    let (health, _) = tonic_health::server::health_reporter();
    let (stop, stopping) = watch::channel(false);
    let licensing = Licensing::new(
        prices,
        store,
        health,
        stopping,
        crate::outbox::Streams::default(),
        false,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let service = LicensingServiceServer::new(licensing.clone());
    tokio::spawn(
        crate::server::server_builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (licensing, format!("http://{address}"), (dir, stop))
}

/// Creates the account `acme` (UTC, auto-growth).
async fn create_acme(client: &mut LicensingServiceClient<tonic::transport::Channel>) {
    client
        .create_account(api::CreateAccountRequest {
            account_id: "acme".into(),
            settings: Some(api::AccountSettings {
                time_zone: "UTC".into(),
                auto_growth: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("create account");
}

fn agent() -> api::MemberSettings {
    api::MemberSettings {
        role: api::Role::User as i32,
        skills: vec![api::Skill {
            id: "voice".into(),
            channel: api::Channel::Voice as i32,
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_get_each_committed_change_and_end_when_the_client_leaves() {
    let (licensing, address, _kept) = serve().await;
    let mut client = LicensingServiceClient::connect(address)
        .await
        .expect("connect");

    create_acme(&mut client).await;
    let mut stream = client
        .get_usage(api::GetUsageRequest {
            account_id: "acme".into(),
            tiers: vec![],
            follow: true,
            month: String::new(),
            view: api::UsageView::Full as i32,
        })
        .await
        .expect("follow")
        .into_inner();
    assert!(matches!(next(&mut stream).await, Part::Summary(_)));
    assert_eq!(next(&mut stream).await, Part::SnapshotComplete(true));
    assert_eq!(licensing.usage_streams(), 1);

    let settings = agent();
    client
        .resolve_member(api::ResolveMemberRequest {
            account_id: "acme".into(),
            member_id: "alice".into(),
            settings: Some(settings),
            apply: true,
        })
        .await
        .expect("apply");
    let Part::Summary(summary) = next(&mut stream).await else {
        panic!("a summary first")
    };
    let standard = summary.products[1].seats.expect("seats");
    assert_eq!((standard.seats, standard.in_use), (1, 1));
    let Part::Members(rows) = next(&mut stream).await else {
        panic!("then the member's row")
    };
    assert_eq!(rows.rows[0].member_id, "alice");

    client
        .remove_member(api::RemoveMemberRequest {
            account_id: "acme".into(),
            member_id: "alice".into(),
        })
        .await
        .expect("remove");
    assert!(matches!(next(&mut stream).await, Part::Summary(_)));
    assert_eq!(
        next(&mut stream).await,
        Part::RemovedMemberId("alice".into())
    );

    // The client leaves; no further change happens, yet the stream's task must end.
    drop(stream);
    let started = tokio::time::Instant::now();
    while licensing.usage_streams() > 0 {
        assert!(
            started.elapsed() < DEADLINE,
            "the follow task outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_read_once_for_all_its_followers() {
    const FOLLOWERS: usize = 100;
    let (licensing, address, _kept) = serve().await;
    let mut client = LicensingServiceClient::connect(address.clone())
        .await
        .expect("connect");
    create_acme(&mut client).await;
    let mut streams = Vec::new();
    for _ in 0..FOLLOWERS {
        let mut stream = client
            .get_usage(api::GetUsageRequest {
                account_id: "acme".into(),
                follow: true,
                ..Default::default()
            })
            .await
            .expect("follow")
            .into_inner();
        assert!(matches!(next(&mut stream).await, Part::Summary(_)));
        assert_eq!(next(&mut stream).await, Part::SnapshotComplete(true));
        streams.push(stream);
    }
    client
        .resolve_member(api::ResolveMemberRequest {
            account_id: "acme".into(),
            member_id: "alice".into(),
            settings: Some(agent()),
            apply: true,
        })
        .await
        .expect("apply");
    for stream in &mut streams {
        assert!(matches!(next(stream).await, Part::Summary(_)));
        let Part::Members(rows) = next(stream).await else {
            panic!("the member's row")
        };
        assert_eq!(rows.rows[0].member_id, "alice");
    }
    assert_eq!(
        licensing
            .change_reads_done
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "{FOLLOWERS} followers, one read"
    );
}

/// Snapshot pages read through the licences they remember give every member the row of its own
/// resolution: members sharing settings with different seats and times, billed monthly and
/// daily, over more than one page, filtered by tier, and with fewer licences kept than there are
/// distinct settings.
#[test]
fn snapshot_pages_give_each_member_the_row_of_its_own_resolution() {
    use licensing_core::{
        AccountSettings, BillingMode, Channel, Inventory, MemberSettings, MemberSettingsInput,
        Role, Skill, UNAUTHENTICATED, Zone,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&StoreConfig {
        path: dir.path().join("db"),
        cache_capacity_bytes: 8 << 20,
    })
    .expect("open");
    let prices = crate::price_list::sample().expect("sample prices");
    let now = Timestamp::now();
    let mut settings = AccountSettings::new(Zone::utc());
    settings.auto_growth = true;
    store
        .create_account(
            Account {
                inventory: Inventory::new(settings.zone.month(now)),
                id: "acme".to_owned(),
                settings,
                sandbox: false,
                created_at: now,
                clock: None,
                audit_sequence: 0,
            },
            UNAUTHENTICATED,
        )
        .expect("account");
    let skill = |id: &str, channel| Skill {
        id: id.to_owned(),
        channel,
    };
    let variants: Vec<MemberSettings> = [
        (
            Some(Role::User),
            vec![skill("voice", Channel::Voice)],
            false,
            BillingMode::Monthly,
        ),
        (
            Some(Role::User),
            vec![skill("voice", Channel::Voice)],
            false,
            BillingMode::Daily,
        ),
        (
            Some(Role::TeamLeader),
            vec![skill("voice", Channel::Voice), skill("chat", Channel::Chat)],
            true,
            BillingMode::Monthly,
        ),
        (
            Some(Role::TeamLeader),
            vec![skill("voice", Channel::Voice), skill("chat", Channel::Chat)],
            true,
            BillingMode::Daily,
        ),
        (
            Some(Role::Administrator),
            Vec::new(),
            false,
            BillingMode::Daily,
        ),
        (
            None,
            vec![skill("email", Channel::Email)],
            true,
            BillingMode::Monthly,
        ),
    ]
    .into_iter()
    .map(|(role, skills, track_statistics, billing_preference)| {
        MemberSettings::new(MemberSettingsInput {
            role,
            skills,
            track_statistics,
            billing_preference,
            ..MemberSettingsInput::default()
        })
        .expect("valid settings")
    })
    .collect();
    // More than a page (1,024 rows), each variant many times over.
    for n in 0..1_500usize {
        let settings = &variants[n % variants.len()];
        store
            .apply_member(
                "acme",
                &format!("m{n:05}"),
                settings,
                Timestamp::now(),
                &prices,
                UNAUTHENTICATED,
            )
            .expect("member");
    }
    let account = store.account("acme").expect("account");
    let month = account.settings.zone.month(now);
    let retention = account.settings.recording_retention;

    for (kept, tiers, reasons) in [
        (LICENCES_KEPT, Vec::new(), true),
        (LICENCES_KEPT, Vec::new(), false),
        (2, Vec::new(), true),
        (1, vec![Tier::Professional], false),
    ] {
        let view = View {
            account_id: "acme".into(),
            tiers: tiers.clone().into(),
            month: None,
            reasons,
        };
        let mut licences = Licences::keeping(kept);
        let (mut rows, mut after) = (Vec::new(), None::<String>);
        loop {
            let page = member_page(
                &store,
                &account,
                &view,
                month,
                &prices,
                after.as_deref(),
                &mut licences,
            )
            .expect("page");
            rows.extend(page.rows);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let expected: Vec<api::MemberUsage> = store
            .members("acme", None)
            .map(|member| {
                let member = member.expect("member");
                let resolution = resolve(&member.settings, retention, &prices);
                let row = to_proto::member_usage(&member, &resolution, Vec::new(), reasons);
                (resolution.tier, row)
            })
            .filter(|(tier, _)| tiers.is_empty() || tiers.contains(tier))
            .map(|(_, row)| row)
            .collect();
        assert!(!expected.is_empty(), "kept {kept}, tiers {tiers:?}");
        assert_eq!(
            rows, expected,
            "kept {kept}, tiers {tiers:?}, reasons {reasons}"
        );
    }
}
