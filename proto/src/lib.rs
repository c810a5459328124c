//! Seedling's wire contract. Generated prost types live here, and this is the
//! only crate that knows both the wire types and the domain types.

pub mod auth;
pub mod cluster;
pub mod local;
pub mod node_tls;
pub mod pki;

/// The generated code, nested as its protobuf packages are, so that one
/// package's reference to another (`super::super::worker::v1`) resolves.
#[allow(missing_debug_implementations, clippy::all)]
mod generated {
    pub mod seedling {
        pub mod worker {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/seedling.worker.v1.rs"));
            }
        }
        pub mod cluster {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/seedling.cluster.v1.rs"));
            }
        }
        pub mod results {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/seedling.results.v1.rs"));
            }
        }
        pub mod api {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/seedling.api.v1.rs"));
            }
        }
    }
}

/// Messages a worker sends about itself (`proto/worker.proto`).
pub use generated::seedling::worker::v1 as worker;

/// Control-plane payloads carried over ractor_cluster (`proto/cluster.proto`).
pub use generated::seedling::cluster::v1 as control;

/// The data plane: unit results streamed to the coordinator (`proto/results.proto`).
pub use generated::seedling::results::v1 as results;

/// The researcher's and operator's gRPC API (`proto/api.proto`).
pub use generated::seedling::api::v1 as api;

impl From<&seedling_common::cost::RunCost> for api::RunCost {
    fn from(cost: &seedling_common::cost::RunCost) -> Self {
        Self {
            stages: cost
                .stages
                .iter()
                .map(|(stage, c)| api::StageCost {
                    stage: stage.clone(),
                    calls: c.calls,
                    prompt_tokens: c.prompt_tokens,
                    prompt_tokens_reused: c.prompt_tokens_reused,
                    generated_tokens: c.generated_tokens,
                    queued_ms: c.queued_ms,
                    prefill_ms: c.prefill_ms,
                    decode_ms: c.decode_ms,
                })
                .collect(),
            embeddings: cost.embeddings,
            embedding_ms: cost.embedding_ms,
            checks_ms: cost.checks_ms,
        }
    }
}

impl From<&api::RunCost> for seedling_common::cost::RunCost {
    fn from(cost: &api::RunCost) -> Self {
        Self {
            stages: cost
                .stages
                .iter()
                .map(|c| {
                    let stage = seedling_common::cost::StageCost {
                        calls: c.calls,
                        prompt_tokens: c.prompt_tokens,
                        prompt_tokens_reused: c.prompt_tokens_reused,
                        generated_tokens: c.generated_tokens,
                        queued_ms: c.queued_ms,
                        prefill_ms: c.prefill_ms,
                        decode_ms: c.decode_ms,
                    };
                    (c.stage.clone(), stage)
                })
                .collect(),
            embeddings: cost.embeddings,
            embedding_ms: cost.embedding_ms,
            checks_ms: cost.checks_ms,
        }
    }
}

impl api::CoordinatorLoad {
    /// Milliseconds the actor spent per result decided.
    pub fn deciding_ms_per_result(&self) -> f64 {
        self.deciding_s * 1e3 / self.results_decided.max(1) as f64
    }

    /// Milliseconds of [`Self::deciding_ms_per_result`] spent handing out units.
    pub fn dispatching_ms_per_result(&self) -> f64 {
        self.dispatching_s * 1e3 / self.results_decided.max(1) as f64
    }

    /// Results decided per actor turn, on average.
    pub fn results_per_group(&self) -> f64 {
        self.results_decided as f64 / self.groups_decided.max(1) as f64
    }

    /// Milliseconds the lineage writer spent per result made durable.
    pub fn writing_ms_per_result(&self) -> f64 {
        self.writing_s * 1e3 / self.results_written.max(1) as f64
    }

    /// Milliseconds the writer's sync thread spent per result made durable.
    pub fn syncing_ms_per_result(&self) -> f64 {
        self.syncing_s * 1e3 / self.results_written.max(1) as f64
    }

    /// CPU milliseconds of the actor's own thread per result decided.
    pub fn deciding_cpu_ms_per_result(&self) -> f64 {
        self.deciding_cpu_s * 1e3 / self.results_decided.max(1) as f64
    }

    /// CPU milliseconds of the writer's own thread per result made durable.
    pub fn writing_cpu_ms_per_result(&self) -> f64 {
        self.writing_cpu_s * 1e3 / self.results_written.max(1) as f64
    }

    /// Results a second the serial stages allow, each on a core of its own
    /// and with nothing else to wait for: the ceiling their CPU cost sets.
    pub fn serial_ceiling_per_s(&self) -> f64 {
        1e3 / self
            .deciding_cpu_ms_per_result()
            .max(self.writing_cpu_ms_per_result())
            .max(1e-9)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::worker::WorkerCapacity;

    #[test]
    fn capacity_round_trips_through_bytes() {
        let capacity = WorkerCapacity {
            worker_id: "w-1".into(),
            slots: 8,
            context_tokens: 8192,
            model_digest: "1d96".into(),
            model_name: "Qwen2.5".into(),
            gpu: false,
            gpu_layers: 0,
            judge_model_name: String::new(),
        };
        let bytes = capacity.encode_to_vec();
        assert_eq!(WorkerCapacity::decode(bytes.as_slice()).unwrap(), capacity);
        assert!(
            WorkerCapacity::decode(&b"\xff\xff\xff"[..]).is_err(),
            "garbage is an error, not a panic"
        );
    }
}
