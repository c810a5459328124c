//! Compiles proto/*.proto with a vendored protoc, so a fresh machine needs no
//! system protobuf compiler (an explicit `PROTOC` still wins).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => path.into(),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    println!("cargo:rerun-if-changed=proto");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(
        config,
        &[
            "proto/worker.proto",
            "proto/cluster.proto",
            "proto/results.proto",
            "proto/api.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
