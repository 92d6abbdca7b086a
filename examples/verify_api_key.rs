use chatbot_backend::proto::api_key_service_client::ApiKeyServiceClient;
use chatbot_backend::proto::{VerifyApiKeyReason, VerifyApiKeyRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Connect once and share the client (it is cheap to clone); it
    // multiplexes calls over one HTTP/2 connection.
    let mut client = ApiKeyServiceClient::connect("http://127.0.0.1:50051").await?;

    // The key a request presented, e.g. its `x-api-key` header; here the
    // first command-line argument.
    let presented = std::env::args().nth(1).unwrap_or_default();
    let answer = client
        .verify_api_key(VerifyApiKeyRequest {
            key: presented,
            // What this call spends from the key's credits, if it has any
            // (e.g. the request's LLM tokens); 0 means 1.
            cost: 1,
            ..Default::default()
        })
        .await? // an error status means the check itself failed (e.g. UNAVAILABLE)
        .into_inner();

    if answer.valid {
        println!(
            "chatbot {} of organization {} -> {}",
            answer.chatbot_id, answer.organization_id, answer.llm_endpoint_url
        );
    } else {
        // An invalid key is a normal answer, not an error status.
        match answer.reason() {
            VerifyApiKeyReason::Revoked | VerifyApiKeyReason::Expired => {
                println!("key no longer valid")
            }
            // Over the key's own rate limit or out of credits: nothing was
            // spent; tell the client when to come back (e.g. HTTP 429).
            VerifyApiKeyReason::RateLimited | VerifyApiKeyReason::UsageExceeded => {
                println!("over its limits until {:?}", answer.reset_time)
            }
            other => println!("rejected: {other:?}"),
        }
    }
    Ok(())
}
