//! The lineage writer: a thread of its own that makes the coordinator's
//! decided groups durable, in the order they were decided, and answers each
//! group's results only then.
//!
//! Deciding and writing are separate so that the coordinator actor decides
//! the next group, and hands out the next units, while sled applies and
//! syncs the last one: the write is the larger half of a result's cost and
//! needs no decision state. Whatever queued up meanwhile goes out as one
//! `append` (one sync for all of it), so under load the writer batches more
//! instead of falling behind. The queue is bounded: a slow disk slows the
//! actor, and through the ingest's bounded pipelines, the workers.

use std::sync::Arc;

use ractor::{ActorRef, RpcReplyPort};
use seedling_common::lineage::LineageBatch;
use tokio::sync::mpsc;

use super::actor::ClusterMsg;
use crate::lineage::LineageStore;

/// Groups decided and waiting for the writer, at most.
const QUEUE: usize = 8;
/// Most groups merged into one durable write.
const MAX_MERGED: usize = 16;

/// One decided group: its lineage, and who waits for it.
#[derive(Debug)]
pub struct Write {
    pub batch: LineageBatch,
    /// The decided groups in it, `(plan id, ticket)`, to confirm.
    pub tickets: Vec<(String, u64)>,
    /// Each result's outcome, sent once the batch is durable.
    pub outcomes: Vec<String>,
    pub reply: RpcReplyPort<Vec<String>>,
}

/// What the writer tells the coordinator after a write.
#[derive(Debug)]
pub struct Written {
    pub tickets: Vec<(String, u64)>,
    /// Why the write failed; `None` when it is durable.
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Writer {
    queue: mpsc::Sender<Write>,
}

impl Writer {
    /// Starts the writing thread; it ends when every `Writer` is dropped
    /// and the queue is drained.
    pub fn start(
        store: Arc<LineageStore>,
        coordinator: ActorRef<ClusterMsg>,
    ) -> std::io::Result<Self> {
        let (queue, waiting) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("lineage-writer".into())
            .spawn(move || write_in_order(&store, &coordinator, waiting))?;
        Ok(Self { queue })
    }

    /// Queues a group, waiting while the queue is full (backpressure).
    pub async fn write(&self, write: Write) {
        if let Err(refused) = self.queue.send(write).await {
            // The writer is gone (the coordinator is stopping): nothing was
            // stored, so the worker keeps these results and resends them.
            let write = refused.0;
            let _ = write.reply.send(
                write
                    .outcomes
                    .iter()
                    .map(|_| "error: the coordinator is stopping".to_string())
                    .collect(),
            );
        }
    }
}

fn write_in_order(
    store: &LineageStore,
    coordinator: &ActorRef<ClusterMsg>,
    mut waiting: mpsc::Receiver<Write>,
) {
    while let Some(first) = waiting.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_MERGED {
            match waiting.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let mut batch = LineageBatch::default();
        for write in &mut group {
            batch.extend(std::mem::take(&mut write.batch));
        }
        let error = store.append(&batch).err().map(|e| e.to_string());
        if let Some(error) = &error {
            tracing::error!(%error, results = group.iter().map(|w| w.outcomes.len()).sum::<usize>(), "a lineage write failed; its results are not acknowledged");
        }
        let mut tickets = Vec::new();
        for write in group {
            let outcomes = match &error {
                None => write.outcomes,
                Some(error) => vec![format!("error: {error}"); write.outcomes.len()],
            };
            let _ = write.reply.send(outcomes);
            tickets.extend(write.tickets);
        }
        // The coordinator may be gone already; then nothing waits for this.
        let _ = coordinator.cast(ClusterMsg::Written(Written { tickets, error }));
    }
}
