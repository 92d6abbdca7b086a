//! Compiles proto/ with protox (pure Rust, no system `protoc`) and generates
//! the tonic stubs. Three descriptor sets go to OUT_DIR for reflection: ours,
//! the google.rpc error-detail types, so grpcurl can decode both, and Envoy's
//! external authorization API (third_party/envoy), which we serve. And the
//! operator console's built files (console/dist, committed) are embedded.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "chatbot/v1/user.proto",
    "chatbot/v1/chatbot.proto",
    "chatbot/v1/api_key.proto",
    "chatbot/v1/user_service.proto",
    "chatbot/v1/chatbot_service.proto",
    "chatbot/v1/api_key_service.proto",
    "chatbot/v1/auth_service.proto",
    "chatbot/v1/status_service.proto",
    "chatbot/v1/audit_service.proto",
    "chatbot/v1/organization.proto",
    "chatbot/v1/organization_service.proto",
    "chatbot/v1/event_service.proto",
    "chatbot/v1/webhook.proto",
    "chatbot/v1/webhook_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=third_party/googleapis");
    println!("cargo:rerun-if-changed=third_party/envoy");
    println!("cargo:rerun-if-changed=console/dist");
    std::fs::write(out_dir.join("console_assets.rs"), console_assets()?)?;

    let descriptors = protox::compile(PROTOS, ["proto"])?;
    std::fs::write(
        out_dir.join("chatbot_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    std::fs::write(out_dir.join("rpc_methods.rs"), rpc_methods(&descriptors))?;
    tonic_prost_build::configure().compile_fds(descriptors)?;

    let rpc_descriptors = protox::compile(
        ["google/rpc/status.proto", "google/rpc/error_details.proto"],
        ["third_party/googleapis"],
    )?;
    std::fs::write(
        out_dir.join("google_rpc_descriptor.bin"),
        prost::Message::encode_to_vec(&rpc_descriptors),
    )?;

    // Envoy's Check, for reflection only: its types come from envoy-types.
    let envoy_descriptors = protox::compile(
        ["envoy/service/auth/v3/external_auth.proto"],
        ["third_party/envoy", "third_party/googleapis"],
    )?;
    std::fs::write(
        out_dir.join("envoy_ext_authz_descriptor.bin"),
        prost::Message::encode_to_vec(&envoy_descriptors),
    )?;
    Ok(())
}

/// `impl RpcRequest` for each RPC's request message, naming the RPC by its
/// gRPC method name (every RPC has a request message of its own, which buf
/// lint's RPC_REQUEST_RESPONSE_UNIQUE keeps true).
fn rpc_methods(descriptors: &prost_types::FileDescriptorSet) -> String {
    let mut code = String::new();
    for file in &descriptors.file {
        if file.package() != "chatbot.v1" {
            continue;
        }
        for service in &file.service {
            for method in &service.method {
                let message = method.input_type().rsplit('.').next().unwrap_or_default();
                code.push_str(&format!(
                    "impl RpcRequest for {message} {{ const METHOD: &'static str = {:?}; }}\n",
                    method.name()
                ));
            }
        }
    }
    code
}

/// `ASSETS`: every file of console/dist, by name, embedded. Sorted, so the
/// table does not depend on the directory's order; empty without a dist
/// (the console then answers 404 to every page).
fn console_assets() -> Result<String, Box<dyn std::error::Error>> {
    let dist = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("console/dist");
    let mut files = Vec::new();
    if dist.is_dir() {
        for entry in std::fs::read_dir(&dist)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    let mut code = String::from("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for path in files {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or("file name")?;
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    Ok(code)
}
