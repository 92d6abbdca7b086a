//! The load generator (`src/bin/loadgen.rs`) against a real server: every
//! request it reports is one the server answered, with the status it
//! answered.

use crate::helpers::{backend_test, spawn_app};

/// Runs the load generator for `requests` requests and returns its JSON
/// summary line.
async fn run_loadgen(app: &crate::helpers::TestApp, rpc: &str, requests: u32) -> serde_json::Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--addr",
            &format!("http://{}", app.addr),
            "--rpc",
            rpc,
            "--concurrency",
            "4",
            "--connections",
            "2",
            "--requests",
            &requests.to_string(),
            "--warmup-secs",
            "0",
            "--json",
        ])
        .output()
        .await
        .expect("the load generator runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().expect("a summary line")).expect("JSON summary")
}

backend_test! {
    async fn the_load_generator_reports_each_request_with_the_status_the_server_gave() {
        let app = spawn_app().await;
        let reads_before = app.chatbot_reads.reads();
        let summary = run_loadgen(&app, "get-chatbot", 200).await;
        assert_eq!(summary["requests"], 200);
        assert_eq!(summary["ok_requests"], 200);
        assert_eq!(summary["status"]["OK"], 200);
        // Each reported request reached the server.
        assert_eq!(app.chatbot_reads.reads() - reads_before, 200);

        let summary = run_loadgen(&app, "verify-api-key-invalid", 50).await;
        assert_eq!(summary["status"]["OK/NOT_FOUND"], 50);
    }
}
