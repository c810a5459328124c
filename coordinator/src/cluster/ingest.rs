//! The data plane's server side: each worker's result stream. A report is
//! acknowledged only after the coordinator has stored its lineage durably;
//! the next report is read only after that, so a slow store slows the
//! workers (HTTP/2 flow control) instead of growing a queue here.

use std::pin::Pin;

use ractor::{ActorRef, rpc::CallResult};
use seedling_proto::results::result_ingest_server::ResultIngest;
use seedling_proto::results::{ReportAck, UnitReport};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::actor::ClusterMsg;

/// Acknowledgements not yet taken by the worker's stream.
const ACK_BUFFER: usize = 32;
/// The longest a report may wait for its durable write.
const STORE_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, Clone)]
pub struct Ingest {
    pub coordinator: ActorRef<ClusterMsg>,
}

type AckStream = Pin<Box<dyn Stream<Item = Result<ReportAck, Status>> + Send>>;

#[tonic::async_trait]
impl ResultIngest for Ingest {
    type StreamResultsStream = AckStream;

    async fn stream_results(
        &self,
        request: Request<Streaming<UnitReport>>,
    ) -> Result<Response<Self::StreamResultsStream>, Status> {
        let mut reports = request.into_inner();
        let (acks, out) = tokio::sync::mpsc::channel(ACK_BUFFER);
        let coordinator = self.coordinator.clone();
        tokio::spawn(async move {
            loop {
                let report = match reports.message().await {
                    Ok(Some(report)) => report,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "a worker's result stream ended");
                        break;
                    }
                };
                let seq = report.seq;
                let stored = coordinator
                    .call(
                        |reply| ClusterMsg::Report(Box::new(report), reply),
                        Some(std::time::Duration::from_millis(STORE_TIMEOUT_MS)),
                    )
                    .await;
                let ack = match stored {
                    Ok(CallResult::Success(outcome)) => Ok(ReportAck { seq, outcome }),
                    // Unacknowledged: the worker resends after reconnecting.
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
