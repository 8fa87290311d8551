//! The steps of a `GetUsage` snapshot in process, on one thread and without gRPC: each pass reads
//! every member like the service's snapshot reader and goes one step further than the last, so the
//! differences between passes say where a row's time goes.

use std::{hint::black_box, time::Instant};

use anyhow::Context as _;
use licensing::{
    api::{self, get_usage_response::Part},
    service::Licences,
};
use licensing_core::PriceList;
use licensing_store::Store;
use prost::Message as _;

use crate::usage::{ACCOUNT_ID, Pass};

/// Rows per message, as the service batches them (`src/service/usage.rs`).
const ROWS_PER_MESSAGE: usize = 1024;

/// The steps, each pass doing its own and all before it.
pub(crate) const STEPS: [&str; 5] = [
    "scan records and their settings parts (Store::raw_members)",
    "+ licence per distinct settings (service::Licences, view FULL)",
    "+ wire rows (member id into the licence's row), batched",
    "+ protobuf encode of each batch",
    "+ protobuf decode of each batch (client side)",
];

/// One pass per step, in order.
pub(crate) fn measure(store: &Store, prices: &PriceList) -> anyhow::Result<Vec<Pass>> {
    (0..STEPS.len())
        .map(|depth| pass(store, prices, depth))
        .collect()
}

/// Reads every member of the account, doing the first `depth + 1` steps for each.
fn pass(store: &Store, prices: &PriceList, depth: usize) -> anyhow::Result<Pass> {
    let started = Instant::now();
    let account = store.account(ACCOUNT_ID).context("reading the account")?;
    let mut licences = Licences::default();
    let mut rows = 0u64;
    let mut bytes = 0u64;
    let mut batch = Vec::with_capacity(ROWS_PER_MESSAGE);
    let mut buffer = Vec::new();
    for member in store.raw_members(ACCOUNT_ID, None) {
        let member = member.context("reading the members")?;
        rows += 1;
        if depth == 0 {
            black_box((member.member_id(), member.settings_part()));
            continue;
        }
        let (tier, mut row) = licences
            .of(&member, &account, prices, true)
            .context("resolving a member")?;
        if depth == 1 {
            black_box((tier, row));
            continue;
        }
        // The benchmark's members have no login days (nothing was ingested), as in the
        // server's passes, where the merge with the login-days tree finds none.
        row.member_id = member.member_id().to_owned();
        batch.push(row);
        if batch.len() == ROWS_PER_MESSAGE {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(ROWS_PER_MESSAGE));
            bytes += send(full, depth, &mut buffer)?;
        }
    }
    if !batch.is_empty() {
        bytes += send(batch, depth, &mut buffer)?;
    }
    Ok(Pass {
        rows,
        elapsed: started.elapsed(),
        bytes,
    })
}

/// What the service does with a full batch, up to `depth`: wrap it in a message, encode it, and
/// decode it as the client would. Returns the encoded size (0 when not encoded).
fn send(rows: Vec<api::MemberUsage>, depth: usize, buffer: &mut Vec<u8>) -> anyhow::Result<u64> {
    let message = api::GetUsageResponse {
        part: Some(Part::Members(api::MemberUsageRows { rows })),
    };
    if depth < 3 {
        black_box(message);
        return Ok(0);
    }
    buffer.clear();
    message.encode(buffer).context("encoding a batch of rows")?;
    drop(message);
    if depth >= 4 {
        let decoded =
            api::GetUsageResponse::decode(buffer.as_slice()).context("decoding a batch of rows")?;
        black_box(decoded);
    }
    Ok(buffer.len() as u64)
}
