//! Compiles `proto/*.proto` with protox (a Rust protobuf compiler) into a
//! descriptor set, then into Rust types with prost-build: no protoc binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/control.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
