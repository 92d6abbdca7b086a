//! WebhookService's rows as the API shows them, and its responses.

use super::CreatedWebhook;
use crate::db::models::{webhook, Webhook, WebhookDelivery};
use crate::domain::Page;
use crate::proto::{self, *};
use crate::services::convert::timestamp;

impl From<Webhook> for proto::Webhook {
    fn from(row: Webhook) -> Self {
        let state = match row.is_active() {
            true => WebhookState::Active,
            false => WebhookState::Disabled,
        };
        proto::Webhook {
            event_types: row.event_types(),
            id: row.id.to_string(),
            organization_id: row.organization_id.to_string(),
            url: row.url,
            description: row.description,
            state: state.into(),
            disabled_reason: row.disabled_reason,
            create_time: Some(timestamp(row.created_at)),
            update_time: Some(timestamp(row.updated_at)),
        }
    }
}

impl From<WebhookDelivery> for proto::WebhookDelivery {
    fn from(row: WebhookDelivery) -> Self {
        let state = match row.state.as_str() {
            webhook::delivery_state::DELIVERED => WebhookDeliveryState::Delivered,
            webhook::delivery_state::FAILED => WebhookDeliveryState::Failed,
            _ => WebhookDeliveryState::Pending,
        };
        proto::WebhookDelivery {
            id: row.id.to_string(),
            webhook_id: row.webhook_id.to_string(),
            event_id: row.event_id.to_string(),
            event_type: row.event_type,
            state: state.into(),
            attempts: row.attempts,
            last_status_code: row.last_status_code,
            last_error: row.last_error,
            create_time: Some(timestamp(row.created_at)),
            last_attempt_time: row.last_attempt_at.map(timestamp),
            next_attempt_time: match state {
                WebhookDeliveryState::Pending => row.next_attempt_at.map(timestamp),
                _ => None,
            },
        }
    }
}

impl From<CreatedWebhook> for CreateWebhookResponse {
    fn from(created: CreatedWebhook) -> Self {
        Self {
            webhook: Some(created.webhook.into()),
            signing_secret: created.signing_secret,
        }
    }
}

impl From<Webhook> for GetWebhookResponse {
    fn from(webhook: Webhook) -> Self {
        Self {
            webhook: Some(webhook.into()),
        }
    }
}

impl From<Vec<Webhook>> for ListWebhooksResponse {
    fn from(webhooks: Vec<Webhook>) -> Self {
        Self {
            webhooks: webhooks.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Webhook> for UpdateWebhookResponse {
    fn from(webhook: Webhook) -> Self {
        Self {
            webhook: Some(webhook.into()),
        }
    }
}

impl From<()> for DeleteWebhookResponse {
    fn from((): ()) -> Self {
        Self {}
    }
}

impl From<Page<WebhookDelivery>> for ListWebhookDeliveriesResponse {
    fn from(page: Page<WebhookDelivery>) -> Self {
        Self {
            deliveries: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }
    }
}

impl From<WebhookDelivery> for RedeliverWebhookResponse {
    fn from(delivery: WebhookDelivery) -> Self {
        Self {
            delivery: Some(delivery.into()),
        }
    }
}
