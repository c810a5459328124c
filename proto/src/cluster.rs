//! The messages coordinator and worker nodes exchange over ractor_cluster.
//!
//! Variant names travel over the wire as strings, so they are frozen: add a
//! variant, never rename one. Each carries a prost payload as bytes, decoded
//! in the handler to a `Result`, so a malformed or foreign frame is an error
//! the receiver logs rather than a panic inside the transport.

use ractor_cluster::RactorClusterMessage;

/// The process group of the coordinator's gate actor.
pub const COORDINATOR_GROUP: &str = "seedling.coordinator";

/// The process group a worker's gate actor joins: one per worker, so the
/// coordinator can address a worker by the id it advertised.
pub fn worker_group(worker_id: &str) -> String {
    format!("seedling.worker.{worker_id}")
}

/// Told to the coordinator by worker nodes.
#[derive(RactorClusterMessage, Debug)]
pub enum CoordinatorWire {
    /// A `control::Heartbeat`: join, lease renewal and load report in one.
    Heartbeat(Vec<u8>),
}

/// Told to a worker by the coordinator.
#[derive(RactorClusterMessage, Debug)]
pub enum WorkerWire {
    /// A `control::UnitAssignment`: run this unit, stream its result back.
    Assign(Vec<u8>),
    /// A `control::UnitWithdrawal`: stop these units, their plan is over.
    Withdraw(Vec<u8>),
}

/// A frame whose payload did not decode.
#[derive(Debug, thiserror::Error)]
#[error("undecodable {what} payload ({len} bytes): {source}")]
pub struct WireError {
    what: &'static str,
    len: usize,
    source: prost::DecodeError,
}

/// Decodes a payload carried in one of the wire variants.
pub fn decode<M: prost::Message + Default>(
    what: &'static str,
    bytes: &[u8],
) -> Result<M, WireError> {
    M::decode(bytes).map_err(|source| WireError {
        what,
        len: bytes.len(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::control::{Heartbeat, UnitAssignment};
    use crate::worker::WorkerCapacity;

    #[test]
    fn payloads_round_trip_and_garbage_is_an_error() {
        let beat = Heartbeat {
            capacity: Some(WorkerCapacity {
                worker_id: "w-1".into(),
                slots: 4,
                ..WorkerCapacity::default()
            }),
            group: worker_group("w-1"),
            running: vec!["plan-1/a#0".into()],
            stats: None,
            unacknowledged: 2,
        };
        let decoded: Heartbeat = decode("heartbeat", &beat.encode_to_vec()).unwrap();
        assert_eq!(decoded, beat);
        let err = decode::<UnitAssignment>("assignment", b"\x0a\xff\xff\xff").unwrap_err();
        assert!(
            err.to_string().contains("undecodable assignment payload"),
            "{err}"
        );
    }

    #[test]
    fn worker_groups_are_named_by_worker_id() {
        assert_eq!(worker_group("gpu-3"), "seedling.worker.gpu-3");
        assert_ne!(worker_group("a"), COORDINATOR_GROUP);
    }
}
