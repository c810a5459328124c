//! Seedling's wire contract. Generated prost types live here, and this is the
//! only crate that knows both the wire types and the domain types.

pub mod actors;

/// Messages a worker sends about itself (`proto/worker.proto`).
pub mod worker {
    include!(concat!(env!("OUT_DIR"), "/seedling.worker.v1.rs"));
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
        };
        let bytes = capacity.encode_to_vec();
        assert_eq!(WorkerCapacity::decode(bytes.as_slice()).unwrap(), capacity);
        assert!(
            WorkerCapacity::decode(&b"\xff\xff\xff"[..]).is_err(),
            "garbage is an error, not a panic"
        );
    }
}
