//! The lineage writer: two threads of its own that make the coordinator's
//! decided groups durable, in the order they were decided, and answer each
//! group's results only then.
//!
//! Deciding and writing are separate so that the coordinator actor decides
//! the next group, and hands out the next units, while sled stores the
//! last one: the write is the larger half of a result's cost and needs no
//! decision state. Writing is two stages in turn: one thread applies the
//! groups to sled (merging whatever queued up into one atomic batch), the
//! other syncs, once for everything applied by the time it starts, and
//! only then answers; so the next groups are applied while the disk
//! syncs the last ones, and under load each sync serves more results
//! instead of the writer falling behind. The queues are bounded: a slow
//! disk slows the actor, and through the ingest's bounded pipelines, the
//! workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ractor::ActorRef;
use seedling_common::lineage::LineageBatch;
use seedling_common::time::thread_cpu;
use seedling_telemetry::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, oneshot};

use super::messages::{ClusterMsg, Write, Written};
use crate::lineage::LineageStore;
use crate::pipeline::PendingLineage;

/// Groups decided and waiting for the writer, at most.
const QUEUE: usize = 8;
/// Most groups merged into one durable write.
const MAX_MERGED: usize = 16;

impl Write {
    /// Starts building the lineage of decided groups, in their order, on
    /// the rayon pool.
    pub fn build(pending: Vec<PendingLineage>) -> std::sync::mpsc::Receiver<LineageBatch> {
        let (built, lineage) = std::sync::mpsc::sync_channel(1);
        rayon::spawn(move || {
            let mut batch = LineageBatch::default();
            for group in pending {
                batch.extend(group.build());
            }
            let _ = built.send(batch);
        });
        lineage
    }

    /// Answers every result with `error` (nothing was stored; the worker
    /// keeps them and resends).
    fn refuse(self, error: &str) -> Vec<(String, u64)> {
        let _ = self
            .reply
            .send(vec![format!("error: {error}"); self.outcomes.len()]);
        self.tickets
    }
}

#[derive(Debug, Clone)]
pub struct Writer {
    queue: mpsc::Sender<Write>,
    load: Arc<WriterLoad>,
}

/// The writer's running totals (read by `cluster status`) and latencies
/// (read by the metrics).
#[derive(Debug)]
pub struct WriterLoad {
    results: AtomicU64,
    writes: AtomicU64,
    busy_ns: AtomicU64,
    cpu_ns: AtomicU64,
    sync_ns: AtomicU64,
    /// From the writer taking a merged batch up to the sync that made it
    /// durable: how long a decided result waits to be acknowledged.
    pub batch_seconds: Histogram,
    pub sync_seconds: Histogram,
}

impl Default for WriterLoad {
    fn default() -> Self {
        // 0.5 ms to about 16 s.
        let buckets = || Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        Self {
            results: AtomicU64::default(),
            writes: AtomicU64::default(),
            busy_ns: AtomicU64::default(),
            cpu_ns: AtomicU64::default(),
            sync_ns: AtomicU64::default(),
            batch_seconds: buckets(),
            sync_seconds: buckets(),
        }
    }
}

impl WriterLoad {
    /// (results written, durable writes, seconds spent applying, seconds
    /// of the applying thread's CPU in them, seconds spent syncing).
    pub fn totals(&self) -> (u64, u64, f64, f64, f64) {
        let seconds = |ns: &AtomicU64| ns.load(Ordering::Relaxed) as f64 / 1e9;
        (
            self.results.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
            seconds(&self.busy_ns),
            seconds(&self.cpu_ns),
            seconds(&self.sync_ns),
        )
    }
}

impl Writer {
    /// Starts the writing threads; they end when every `Writer` is dropped
    /// and the queue is drained, and then tell `done`.
    pub fn start(
        store: Arc<LineageStore>,
        coordinator: ActorRef<ClusterMsg>,
        done: oneshot::Sender<()>,
    ) -> std::io::Result<Self> {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let (applied, to_sync) = std::sync::mpsc::sync_channel(QUEUE);
        let load = Arc::new(WriterLoad::default());
        let (totals, sync_totals) = (Arc::clone(&load), Arc::clone(&load));
        let sync_store = Arc::clone(&store);
        std::thread::Builder::new()
            .name("lineage-sync".into())
            .spawn(move || {
                sync_in_order(&sync_store, &coordinator, &to_sync, &sync_totals);
                let _ = done.send(());
            })?;
        std::thread::Builder::new()
            .name("lineage-writer".into())
            .spawn(move || apply_in_order(&store, waiting, &applied, &totals))?;
        Ok(Self { queue, load })
    }

    pub fn load(&self) -> &WriterLoad {
        &self.load
    }

    /// Queues a group, waiting while the queue is full (backpressure).
    pub async fn write(&self, write: Write) {
        if let Err(refused) = self.queue.send(write).await {
            // The writer is gone: the coordinator is stopping.
            refused.0.refuse("the coordinator is stopping");
        }
    }
}

/// A merged write applied to the store and waiting for the sync that
/// makes it durable (`error`: why it was not applied).
struct Applied {
    group: Vec<Write>,
    error: Option<String>,
    /// When the writer took the batch.
    started: Instant,
}

/// Applies decided groups to the store in order, merging what queued up,
/// and hands them to the sync thread: while one sync runs, the next
/// groups are applied.
fn apply_in_order(
    store: &LineageStore,
    mut waiting: mpsc::Receiver<Write>,
    applied: &std::sync::mpsc::SyncSender<Applied>,
    load: &WriterLoad,
) {
    while let Some(first) = waiting.blocking_recv() {
        let started = (Instant::now(), thread_cpu());
        let mut group = vec![first];
        while group.len() < MAX_MERGED {
            match waiting.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let mut batch = LineageBatch::default();
        let mut unbuilt = false;
        for write in &mut group {
            match write.lineage.recv() {
                Ok(built) => batch.extend(built),
                Err(_) => unbuilt = true,
            }
        }
        let error = if unbuilt {
            Some("building a decided group's lineage failed".to_string())
        } else {
            store.apply_owned(batch).err().map(|e| e.to_string())
        };
        load.busy_ns
            .fetch_add(started.0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        load.cpu_ns.fetch_add(
            thread_cpu().saturating_sub(started.1).as_nanos() as u64,
            Ordering::Relaxed,
        );
        let applying = Applied {
            group,
            error,
            started: started.0,
        };
        if let Err(refused) = applied.send(applying) {
            // The sync thread is gone (it never ends first): answer anyway.
            for write in refused.0.group {
                write.refuse("the lineage writer stopped");
            }
        }
    }
}

/// Makes applied groups durable, one sync for whatever was applied by the
/// time it starts, then answers their results and tells the coordinator.
fn sync_in_order(
    store: &LineageStore,
    coordinator: &ActorRef<ClusterMsg>,
    applied: &std::sync::mpsc::Receiver<Applied>,
    load: &WriterLoad,
) {
    while let Ok(first) = applied.recv() {
        let mut ready = vec![first];
        while let Ok(next) = applied.try_recv() {
            ready.push(next);
        }
        let started = Instant::now();
        let synced = if ready.iter().any(|a| a.error.is_none()) {
            store.sync().err().map(|e| e.to_string())
        } else {
            None
        };
        let syncing = started.elapsed();
        load.sync_ns
            .fetch_add(syncing.as_nanos() as u64, Ordering::Relaxed);
        load.sync_seconds.observe(syncing.as_secs_f64());
        load.writes.fetch_add(1, Ordering::Relaxed);
        for Applied {
            group,
            error,
            started,
        } in ready
        {
            load.batch_seconds.observe(started.elapsed().as_secs_f64());
            let error = error.or_else(|| synced.clone());
            let results: usize = group.iter().map(|w| w.outcomes.len()).sum();
            load.results.fetch_add(results as u64, Ordering::Relaxed);
            if let Some(error) = &error {
                tracing::error!(%error, results, "a lineage write failed; its results are not acknowledged");
            }
            let mut tickets = Vec::new();
            for write in group {
                match &error {
                    None => {
                        let _ = write.reply.send(write.outcomes);
                        tickets.extend(write.tickets);
                        // Stored: the units' traces end here.
                        drop(write.traces);
                    }
                    Some(error) => {
                        for trace in &write.traces {
                            trace.record("error", error.as_str());
                        }
                        tickets.extend(write.refuse(error));
                    }
                }
            }
            // The coordinator may be gone already; then nothing waits for this.
            let _ = coordinator.cast(ClusterMsg::Written(Written { tickets, error }));
        }
    }
}
