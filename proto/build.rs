//! Compiles proto/*.proto with a vendored protoc, so a fresh machine needs no
//! system protobuf compiler (an explicit `PROTOC` still wins).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => path.into(),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    println!("cargo:rerun-if-changed=proto");
    prost_build::Config::new()
        .protoc_executable(protoc)
        .compile_protos(&["proto/worker.proto"], &["proto"])?;
    Ok(())
}
