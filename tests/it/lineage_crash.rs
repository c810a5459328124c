//! Durability under SIGKILL: a child process appends batches and reports
//! each acknowledged one; it is killed at random moments; after each kill the
//! store opens, `check` passes, every acknowledged batch is present in full
//! and no batch is visible in part.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use seedling_common::ids::{NodeId, PlanId};
use seedling_coordinator::lineage::LineageStore;
use seedling_coordinator::lineage::synthetic::records;

const RECORDS_PER_BATCH: u64 = 20;
const ROUNDS: usize = 6;

/// A tiny xorshift so the kill moments vary run to run (the seed is printed).
struct Jitter(u64);

impl Jitter {
    fn next_ms(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % max
    }
}

fn batch_ids(plan: &PlanId, batch: u64) -> Vec<NodeId> {
    records(plan, batch * RECORDS_PER_BATCH, RECORDS_PER_BATCH)
        .nodes
        .into_iter()
        .map(|n| n.id)
        .collect()
}

/// How many of the batch's nodes are stored.
fn present(store: &LineageStore, ids: &[NodeId]) -> usize {
    ids.iter()
        .filter(|id| store.node(id).unwrap().is_some())
        .count()
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test jitter seed {seed}");
    let mut jitter = Jitter(seed);
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let plan = PlanId::new("p-crash");
    let mut next_batch = 0u64;
    let mut acknowledged: Vec<u64> = Vec::new();

    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lineage-writer"))
            .arg(&store_dir)
            .arg(next_batch.to_string())
            .arg(RECORDS_PER_BATCH.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let acks = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| {
                    line.strip_prefix("ack ")
                        .and_then(|n| n.parse::<u64>().ok())
                });
            for n in acks {
                if tx.send(n).is_err() {
                    break;
                }
            }
        });
        // Let it write for a random while (at least one acknowledgement).
        let deadline = Instant::now() + Duration::from_millis(50 + jitter.next_ms(400));
        let mut acked_this_round = 0;
        while Instant::now() < deadline || acked_this_round == 0 {
            if let Ok(n) = rx.recv_timeout(Duration::from_millis(20)) {
                acknowledged.push(n);
                acked_this_round += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        reader.join().unwrap();
        acknowledged.extend(rx.try_iter());

        let store = LineageStore::open(&store_dir).expect("store reopens after SIGKILL");
        let report = store.check().unwrap();
        assert!(report.is_ok(), "round {round}: {:?}", report.problems);
        for &batch in &acknowledged {
            let ids = batch_ids(&plan, batch);
            assert_eq!(
                present(&store, &ids),
                ids.len(),
                "round {round}: acknowledged batch {batch} lost nodes"
            );
        }
        // The writer applies two batches per sync: either past the last
        // acknowledged one may be in the store, each whole or not at all.
        let first_unacknowledged = acknowledged.iter().max().map_or(0, |m| m + 1);
        next_batch = first_unacknowledged;
        for in_flight in first_unacknowledged..first_unacknowledged + 2 {
            let ids = batch_ids(&plan, in_flight);
            let n_present = present(&store, &ids);
            assert!(
                n_present == 0 || n_present == ids.len(),
                "round {round}: batch {in_flight} is partly visible ({n_present} of {})",
                ids.len()
            );
            if n_present == ids.len() && next_batch == in_flight {
                next_batch = in_flight + 1;
            }
        }
        eprintln!(
            "round {round}: {acked_this_round} batches acknowledged, {} unacknowledged batches found complete",
            next_batch - first_unacknowledged
        );
    }
    assert!(acknowledged.len() >= ROUNDS);
}
