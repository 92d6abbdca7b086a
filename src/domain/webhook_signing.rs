//! Webhook signing secrets and signatures, as the Standard Webhooks
//! specification says: a secret is shown as `whsec_` and its base64; a
//! delivery's `webhook-signature` is `v1,` and the base64 of
//! HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<body>").
//!
//! A webhook's secret is never stored: it is derived from the server's
//! `SECRET_KEY` and the webhook's random salt (kept in its row, useless
//! alone), so a copy of the database signs nothing.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What every webhook's secret is derived from: HMAC-SHA256 of the
/// server's key under a label of its own, so no other use of the key can
/// produce it.
#[derive(Clone)]
pub struct WebhookSigner {
    master: [u8; 32],
}

impl std::fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSigner(..)")
    }
}

/// One webhook's signing secret. Its `Debug` hides it.
pub struct WebhookSecret([u8; 32]);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl WebhookSigner {
    /// From the server's `SECRET_KEY`.
    pub fn new(server_key: &[u8]) -> Self {
        Self {
            master: hmac(server_key, &[b"chatbot-backend webhook signing secrets v1"]),
        }
    }

    /// Key material for another use of `SECRET_KEY`, named by `label`, from
    /// a random `salt` (a webhook's secret hashes its id and a random salt
    /// of the server's instead: neither can be steered to meet a label).
    pub fn derive(&self, label: &[u8; 32], salt: &[u8]) -> [u8; 32] {
        hmac(&self.master, &[label, salt])
    }

    /// The secret of the webhook with this id and salt.
    pub fn secret(&self, webhook_id: &uuid::Uuid, salt: &[u8]) -> WebhookSecret {
        WebhookSecret(hmac(&self.master, &[webhook_id.as_bytes(), salt]))
    }
}

impl WebhookSecret {
    /// As shown to the webhook's owner, once: `whsec_<base64>`.
    pub fn expose(&self) -> String {
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }

    /// The `webhook-signature` header of a message.
    pub fn signature(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        signature_with(&self.0, message_id, timestamp, body)
    }
}

/// `v1,` and the base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>").
fn signature_with(key: &[u8], message_id: &str, timestamp: i64, body: &[u8]) -> String {
    let signed = hmac(
        key,
        &[
            message_id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ],
    );
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(signed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks reference libraries' own test vector.
    #[test]
    fn signs_as_the_standard_webhooks_reference_does() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let signature = signature_with(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn each_webhook_has_its_own_secret_and_the_same_one_every_time() {
        let signer = WebhookSigner::new(b"a server key of thirty-two bytes!");
        let (one, two) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let salt = [7u8; 16];
        assert_eq!(
            signer.secret(&one, &salt).expose(),
            signer.secret(&one, &salt).expose()
        );
        assert_ne!(
            signer.secret(&one, &salt).expose(),
            signer.secret(&two, &salt).expose()
        );
        assert_ne!(
            signer.secret(&one, &salt).expose(),
            signer.secret(&one, &[8u8; 16]).expose()
        );
        let other_server = WebhookSigner::new(b"another server key, also long!!!");
        assert_ne!(
            signer.secret(&one, &salt).expose(),
            other_server.secret(&one, &salt).expose()
        );
        assert!(signer.secret(&one, &salt).expose().starts_with("whsec_"));
    }
}
