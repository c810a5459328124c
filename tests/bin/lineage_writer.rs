//! Crash-test helper: appends synthetic record batches to a lineage store
//! forever, printing `ack N` after batch N is durable. The crash test kills
//! it with SIGKILL and checks that every acknowledged batch survived.
//!
//! As the coordinator's writer does, it applies batches without waiting
//! (two at a time here) and acknowledges them only after the sync that
//! follows: an applied batch is not yet a durable one.
//!
//! usage: lineage-writer STORE_DIR FIRST_BATCH RECORDS_PER_BATCH

use std::io::Write;

use seedling_common::ids::PlanId;
use seedling_coordinator::lineage::LineageStore;
use seedling_coordinator::lineage::synthetic::{plan_roots, records};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 4,
        "usage: lineage-writer STORE_DIR FIRST_BATCH RECORDS_PER_BATCH"
    );
    let store = LineageStore::open(&args[1])?;
    let first: u64 = args[2].parse()?;
    let per_batch: u64 = args[3].parse()?;
    let plan = PlanId::new("p-crash");
    store.append(&plan_roots(&plan))?;
    let mut stdout = std::io::stdout().lock();
    for batch in (first..).step_by(2) {
        for applied in [batch, batch + 1] {
            store.apply_owned(records(&plan, applied * per_batch, per_batch))?;
        }
        store.sync()?;
        writeln!(stdout, "ack {batch}\nack {}", batch + 1)?;
        stdout.flush()?;
    }
    Ok(())
}
