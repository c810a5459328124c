//! The data plane's server side: each worker's result stream. A report is
//! acknowledged only after the coordinator has stored its lineage durably.
//!
//! Group commit: every stream hands its reports to one committer, which
//! takes whatever has queued up (up to `MAX_GROUP`) to the coordinator as a
//! single durable write; under load one sync serves many results, at low
//! load a group is one report and nothing waits. Each stream keeps at most
//! `PIPELINE` reports between reading and acknowledging, so a slow store
//! slows the workers (HTTP/2 flow control) instead of growing a queue here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use seedling_proto::local::{LocalReport, LocalReports};
use seedling_proto::results::result_ingest_server::ResultIngest;
use seedling_proto::results::{ReportAck, UnitReport};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::messages::{Arrived, ClusterMsg};

/// Reports one stream may have read but not yet acknowledged.
const PIPELINE: usize = 16;
/// Most reports stored in one write.
const MAX_GROUP: usize = 512;
/// The longest a group may wait for its durable write.
const STORE_TIMEOUT: Duration = Duration::from_secs(60);
/// Groups the coordinator may hold between deciding and answering.
const GROUPS_IN_FLIGHT: usize = 16;

/// A report on its way to the store, and where its outcome goes (`None`:
/// not stored; the worker resends after reconnecting).
type Commit = (Arrived, oneshot::Sender<Option<String>>);

#[derive(Debug, Clone)]
pub struct Ingest {
    commits: mpsc::Sender<Commit>,
}

impl Ingest {
    /// Starts the committer that stores reports for `coordinator`.
    pub fn start(coordinator: ActorRef<ClusterMsg>) -> Self {
        let (commits, queue) = mpsc::channel(MAX_GROUP);
        tokio::spawn(commit_groups(coordinator, queue));
        Self { commits }
    }

    /// A result stream for a worker in this process: its reports join the
    /// same groups as the gRPC streams', with no network between.
    pub fn local(&self) -> LocalReports {
        let (reports, mut arriving) = mpsc::channel::<LocalReport>(PIPELINE);
        let commits = self.commits.clone();
        tokio::spawn(async move {
            while let Some((report, reply)) = arriving.recv().await {
                if commits.send((Arrived::read(report), reply)).await.is_err() {
                    break;
                }
            }
        });
        reports
    }
}

async fn commit_groups(coordinator: ActorRef<ClusterMsg>, mut queue: mpsc::Receiver<Commit>) {
    // Groups handed to the coordinator and not answered yet: it decides the
    // next while the writer stores the last, up to this many.
    let in_flight = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let (reports, replies): (Vec<Arrived>, Vec<_>) = group.into_iter().unzip();
        let (reply, stored) = oneshot::channel();
        if coordinator
            .cast(ClusterMsg::Reports(reports, reply.into()))
            .is_err()
        {
            return; // the coordinator is gone; the streams end with it
        }
        tokio::spawn(async move {
            let outcomes = tokio::time::timeout(STORE_TIMEOUT, stored).await;
            drop(permit);
            match outcomes {
                Ok(Ok(outcomes)) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Some(outcome));
                    }
                }
                _ => {
                    for reply in replies {
                        let _ = reply.send(None);
                    }
                }
            }
        });
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<ReportAck, Status>> + Send>>;

#[tonic::async_trait]
impl ResultIngest for Ingest {
    type StreamResultsStream = AckStream;

    async fn stream_results(
        &self,
        request: Request<Streaming<UnitReport>>,
    ) -> Result<Response<Self::StreamResultsStream>, Status> {
        seedling_proto::auth::require_operate(&request, "stream results as a worker")?;
        let mut reports = request.into_inner();
        let (pending, mut waiting) =
            mpsc::channel::<Result<(u64, oneshot::Receiver<Option<String>>), Status>>(PIPELINE);
        let (acks, out) = mpsc::channel(PIPELINE);
        let commits = self.commits.clone();
        tokio::spawn(async move {
            loop {
                let report = match reports.message().await {
                    Ok(Some(report)) => report,
                    Ok(None) => break,
                    Err(status) => {
                        // Over the size limit, or not a report at all: the
                        // sender learns why, and its stream ends.
                        tracing::warn!(%status, "a result stream sent what cannot be read; closed");
                        let _ = pending.send(Err(status)).await;
                        break;
                    }
                };
                let (reply, outcome) = oneshot::channel();
                let seq = report.seq;
                if pending.send(Ok((seq, outcome))).await.is_err()
                    || commits.send((Arrived::read(report), reply)).await.is_err()
                {
                    break;
                }
            }
        });
        // Acknowledgements in the order the reports came.
        tokio::spawn(async move {
            while let Some(next) = waiting.recv().await {
                let (seq, outcome) = match next {
                    Ok(next) => next,
                    Err(status) => {
                        let _ = acks.send(Err(status)).await;
                        break;
                    }
                };
                let ack = match outcome.await {
                    Ok(Some(outcome)) => Ok(ReportAck { seq, outcome }),
                    _ => Err(Status::unavailable(
                        "the coordinator could not store the result",
                    )),
                };
                let failed = ack.is_err();
                if acks.send(ack).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}
