//! Compiles the benchmark's baseline contract (`proto/bench/v1/echo.proto`) the same way the
//! service compiles its own: a pure-Rust proto compiler, no protoc needed.

const PROTOS: &[&str] = &["bench/v1/echo.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
