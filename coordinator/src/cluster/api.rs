//! The researcher's and operator's gRPC API. Questions about plans and
//! workers go to the coordinator actor; lineage and exports read the store
//! directly (sled is safe to share), so a long export never stalls results.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use seedling_common::config::Limits;
use seedling_common::ids::{NodeId, PlanId};
use seedling_proto::api::seedling_server::Seedling;
use seedling_proto::api::{
    ClusterStatus, ClusterStatusRequest, ExportChunk, LineageReply, LineageRequest,
    ListPlansRequest, ListPlansResponse, PlanRef, PlanSummary, ReviewReply, ReviewRequest,
    SubmitPlanRequest,
};
use seedling_proto::auth::require_operate;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::ApiError;
use super::messages::{ClusterMsg, PlanSubmission, PlanView, is_terminal};
use super::reviews::ReviewDesks;
use super::wire::{review_call, review_reply, review_status};
use crate::dataset::export_dataset;
use crate::lineage::{LineageError, LineageStore, lineage_report};

/// Bytes per export chunk: far below ractor's and tonic's frame limits.
const CHUNK: usize = 1 << 20;
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Api {
    pub coordinator: ActorRef<ClusterMsg>,
    pub store: Arc<LineageStore>,
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub reviews: Arc<ReviewDesks>,
}

/// Refuses a plan, or its reference files, over the coordinator's limits
/// before anything of it is parsed or stored.
fn check_submission(request: &SubmitPlanRequest, limits: &Limits) -> Result<(), Status> {
    let name = &request.file_name;
    let checks = [
        (
            request.plan_toml.len(),
            limits.max_plan_bytes,
            format!("the plan {name} (bytes)"),
            "max_plan_bytes",
        ),
        (
            request.files.len(),
            limits.max_reference_files,
            format!("the number of reference files of {name}"),
            "max_reference_files",
        ),
        (
            request.files.values().map(Vec::len).sum(),
            limits.max_reference_bytes,
            format!("the reference files of {name} (bytes, together)"),
            "max_reference_bytes",
        ),
    ];
    checks
        .iter()
        .try_for_each(|(value, limit, what, field)| Limits::check(*value, *limit, what, field))
        .map_err(Status::invalid_argument)
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Api {
    async fn ask<T: Send + 'static>(
        &self,
        message: impl FnOnce(ractor::RpcReplyPort<T>) -> ClusterMsg,
    ) -> Result<T, Status> {
        match self.coordinator.call(message, Some(ASK_TIMEOUT)).await {
            Ok(CallResult::Success(value)) => Ok(value),
            Ok(CallResult::Timeout) => Err(Status::deadline_exceeded(
                "the coordinator is busy; try again",
            )),
            _ => Err(Status::unavailable("the coordinator actor has stopped")),
        }
    }
}

fn plan_id(request: &PlanRef) -> Result<String, Status> {
    let id = request.plan_id.trim();
    if id.is_empty() {
        return Err(Status::invalid_argument("plan_id: required"));
    }
    Ok(id.to_string())
}

/// Every file under `dir`, as paths relative to it, sorted.
fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    files.sort();
    Ok(files)
}

#[tonic::async_trait]
impl Seedling for Api {
    async fn submit_plan(
        &self,
        request: Request<SubmitPlanRequest>,
    ) -> Result<Response<PlanSummary>, Status> {
        require_operate(&request, "submit a plan")?;
        check_submission(request.get_ref(), &self.limits)?;
        let submission = Box::new(PlanSubmission::from(request.into_inner()));
        let view = self
            .ask(|reply| ClusterMsg::Submit(submission, reply))
            .await??;
        Ok(Response::new(view.summary()))
    }

    type WatchPlanStream = Stream_<PlanSummary>;

    async fn watch_plan(
        &self,
        request: Request<PlanRef>,
    ) -> Result<Response<Self::WatchPlanStream>, Status> {
        let id = plan_id(request.get_ref())?;
        let mut updates = self.ask(|reply| ClusterMsg::Watch(id, reply)).await??;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let summary = updates.borrow_and_update().summary();
                let done = is_terminal(&summary.state);
                if tx.send(Ok(summary)).await.is_err() || done {
                    return;
                }
                // At most a few updates a second: watchers see progress, not every result.
                tokio::time::sleep(Duration::from_millis(250)).await;
                if updates.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_plan(&self, request: Request<PlanRef>) -> Result<Response<PlanSummary>, Status> {
        let id = plan_id(request.get_ref())?;
        Ok(Response::new(
            self.ask(|reply| ClusterMsg::GetPlan(id, reply))
                .await??
                .summary(),
        ))
    }

    async fn list_plans(
        &self,
        _request: Request<ListPlansRequest>,
    ) -> Result<Response<ListPlansResponse>, Status> {
        let views = self.ask(ClusterMsg::ListPlans).await?;
        let plans = views.iter().map(PlanView::summary).collect();
        Ok(Response::new(ListPlansResponse { plans }))
    }

    async fn cancel_plan(
        &self,
        request: Request<PlanRef>,
    ) -> Result<Response<PlanSummary>, Status> {
        require_operate(&request, "cancel a plan")?;
        let id = plan_id(request.get_ref())?;
        Ok(Response::new(
            self.ask(|reply| ClusterMsg::Cancel(id, reply))
                .await??
                .summary(),
        ))
    }

    async fn get_cluster_status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(self.ask(ClusterMsg::Status).await?.status()))
    }

    type ExportDatasetStream = Stream_<ExportChunk>;

    async fn export_dataset(
        &self,
        request: Request<PlanRef>,
    ) -> Result<Response<Self::ExportDatasetStream>, Status> {
        let id = plan_id(request.get_ref())?;
        // Known to the coordinator, or NotFound before any work.
        let lookup = id.clone();
        self.ask(|reply| ClusterMsg::GetPlan(lookup, reply))
            .await??;
        let store = Arc::clone(&self.store);
        let exports = self.data_dir.join("exports");
        let exported = tokio::task::spawn_blocking(
            move || -> Result<(String, Vec<(PathBuf, Vec<u8>)>), ApiError> {
                // A directory of this request's own: exports of one plan
                // asked for at once do not write over each other.
                let fail = |e: std::io::Error| {
                    ApiError::Internal(format!("a directory for the export of {id}: {e}"))
                };
                std::fs::create_dir_all(&exports).map_err(fail)?;
                let scratch = tempfile::Builder::new()
                    .prefix(&format!("{id}."))
                    .tempdir_in(&exports)
                    .map_err(fail)?;
                let out = scratch.path();
                let summary =
                    export_dataset(&store, &PlanId::new(id.clone()), out).map_err(|e| {
                        ApiError::FailedPrecondition(format!("cannot export plan {id}: {e}"))
                    })?;
                let files = files_under(out)
                    .and_then(|files| {
                        files
                            .into_iter()
                            .map(|f| std::fs::read(out.join(&f)).map(|bytes| (f, bytes)))
                            .collect()
                    })
                    .map_err(|e| ApiError::Internal(format!("reading the export of {id}: {e}")))?;
                Ok((summary.version, files))
            },
        )
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        let (version, files) = exported;
        let chunks: Vec<Result<ExportChunk, Status>> = files
            .into_iter()
            .flat_map(|(path, bytes)| {
                let path = path.to_string_lossy().into_owned();
                let version = version.clone();
                let pieces: Vec<Vec<u8>> = if bytes.is_empty() {
                    vec![Vec::new()]
                } else {
                    bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect()
                };
                pieces.into_iter().map(move |data| {
                    Ok(ExportChunk {
                        path: path.clone(),
                        data,
                        dataset_version: version.clone(),
                    })
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn get_lineage(
        &self,
        request: Request<LineageRequest>,
    ) -> Result<Response<LineageReply>, Status> {
        let LineageRequest {
            record_id: id,
            depth,
            json,
        } = request.into_inner();
        let depth = if depth == 0 { 32 } else { depth.min(1_000) } as usize;
        if id.trim().is_empty() {
            return Err(Status::invalid_argument("record_id: required"));
        }
        let store = Arc::clone(&self.store);
        let text = tokio::task::spawn_blocking(move || {
            lineage_report(&store, &NodeId::new(id.trim().to_string()), depth, json)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| match e {
            LineageError::NodeNotFound(_) => Status::not_found(e.to_string()),
            other => Status::internal(other.to_string()),
        })?;
        Ok(Response::new(LineageReply { text }))
    }

    async fn review(
        &self,
        request: Request<ReviewRequest>,
    ) -> Result<Response<ReviewReply>, Status> {
        let may_decide = require_operate(&request, "record review decisions");
        let (plan, settings, call) =
            review_call(request.into_inner()).map_err(Status::invalid_argument)?;
        if call.decides() {
            may_decide?;
        }
        let reviews = Arc::clone(&self.reviews);
        // Off the async threads: opening a review reads the store, and a
        // decision waits for an fsync.
        let (plan, answer) =
            tokio::task::spawn_blocking(move || reviews.answer_blocking(plan, settings, call))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| review_status(e.into()))?;
        Ok(Response::new(review_reply(&plan, answer)))
    }
}
