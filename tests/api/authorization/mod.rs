//! The authorization matrix: every protected RPC called as every kind of
//! caller, asserting the exact code of each cell. The target is a team
//! organization's chatbot and key; its owner, an editor and a viewer are
//! members, and a stranger belongs to another organization only.

mod calls;
mod targets;

use tonic::Code;

use self::calls::call;
use self::targets::{fresh_target, missing_target};
use crate::auth::bad_tokens;
use crate::helpers::{backend_test, spawn_app_with, TestApp, TestUser};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    GetUser,
    ListUsers,
    UpdateUser,
    DeleteUser,
    CreateChatbot,
    GetChatbot,
    ListChatbots,
    UpdateChatbot,
    DeleteChatbot,
    CreateApiKey,
    GetApiKey,
    UpdateApiKey,
    ListApiKeys,
    RevokeApiKey,
    RotateApiKey,
    DeleteApiKey,
    VerifyApiKey,
    GetApiKeyUsage,
    GetChatbotUsage,
    ListAuditEvents,
    GetCurrentUser,
    Logout,
    GetDatabaseStatus,
    CreateOrganization,
    GetOrganization,
    ListOrganizations,
    UpdateOrganization,
    DeleteOrganization,
    ListMembers,
    UpdateMember,
    RemoveMember,
    CreateInvitation,
    ListInvitations,
    DeleteInvitation,
    AcceptInvitation,
    GetOrganizationUsage,
    CreateServiceAccount,
    ListServiceAccounts,
    RevokeServiceAccount,
    DeleteServiceAccount,
    CreateUser,
    Login,
    RefreshToken,
    Check,
    SettleReservation,
    ReleaseReservation,
    WatchEvents,
    CreateWebhook,
    GetWebhook,
    ListWebhooks,
    UpdateWebhook,
    DeleteWebhook,
    ListWebhookDeliveries,
    RedeliverWebhook,
}

const ALL_RPCS: &[Rpc] = &[
    Rpc::GetUser,
    Rpc::ListUsers,
    Rpc::UpdateUser,
    Rpc::DeleteUser,
    Rpc::CreateChatbot,
    Rpc::GetChatbot,
    Rpc::ListChatbots,
    Rpc::UpdateChatbot,
    Rpc::DeleteChatbot,
    Rpc::CreateApiKey,
    Rpc::GetApiKey,
    Rpc::UpdateApiKey,
    Rpc::ListApiKeys,
    Rpc::RevokeApiKey,
    Rpc::RotateApiKey,
    Rpc::DeleteApiKey,
    Rpc::VerifyApiKey,
    Rpc::GetApiKeyUsage,
    Rpc::GetChatbotUsage,
    Rpc::ListAuditEvents,
    Rpc::GetCurrentUser,
    Rpc::Logout,
    Rpc::GetDatabaseStatus,
    Rpc::CreateOrganization,
    Rpc::GetOrganization,
    Rpc::ListOrganizations,
    Rpc::UpdateOrganization,
    Rpc::DeleteOrganization,
    Rpc::ListMembers,
    Rpc::UpdateMember,
    Rpc::RemoveMember,
    Rpc::CreateInvitation,
    Rpc::ListInvitations,
    Rpc::DeleteInvitation,
    Rpc::AcceptInvitation,
    Rpc::GetOrganizationUsage,
    Rpc::CreateServiceAccount,
    Rpc::ListServiceAccounts,
    Rpc::RevokeServiceAccount,
    Rpc::DeleteServiceAccount,
    Rpc::CreateUser,
    Rpc::Login,
    Rpc::RefreshToken,
    Rpc::Check,
    Rpc::SettleReservation,
    Rpc::ReleaseReservation,
    Rpc::WatchEvents,
    Rpc::CreateWebhook,
    Rpc::GetWebhook,
    Rpc::ListWebhooks,
    Rpc::UpdateWebhook,
    Rpc::DeleteWebhook,
    Rpc::ListWebhookDeliveries,
    Rpc::RedeliverWebhook,
];

/// What an RPC needs of its caller (besides being signed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// To be the target user, or an admin.
    TheAccount,
    /// OrganizationRole VIEWER or more in the target's organization.
    View,
    /// EDITOR or more.
    Edit,
    /// OWNER.
    Manage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    BadToken(usize),
    /// A member of another organization only, on the team's objects.
    Stranger,
    /// The team's owner (who also created its chatbot and key).
    Owner,
    /// Members of the team with these roles.
    Editor,
    Viewer,
    /// The team's service accounts with these roles.
    ServiceAccountEditor,
    ServiceAccountViewer,
    /// A service account of the team whose token was revoked.
    RevokedServiceAccount,
    /// A service account of the team whose token's expiry has passed.
    ExpiredServiceAccount,
    Admin,
    /// A plain user, on ids that do not exist.
    UserOnMissing,
    /// An admin, on ids that do not exist.
    AdminOnMissing,
}

/// What one cell targets: the team's owner (a user, with the password
/// Login is called with), the team, its chatbot and key, its editor (a
/// member), a pending invitation, a service account, a webhook with a
/// delivery, and two open reservations on the key.
#[derive(Clone)]
struct Target {
    user_id: String,
    email: String,
    password: String,
    organization_id: String,
    chatbot_id: String,
    api_key_id: i64,
    key: String,
    refresh_token: String,
    member_id: String,
    invitation_id: String,
    invitation_token: String,
    service_account_id: String,
    webhook_id: String,
    delivery_id: String,
    reservation_to_settle: String,
    reservation_to_release: String,
}

/// The people of one target's team.
#[derive(Clone)]
struct Team {
    owner: TestUser,
    editor: TestUser,
    viewer: TestUser,
    /// Service account tokens.
    account_editor: String,
    account_viewer: String,
    account_revoked: String,
    account_expired: String,
}

impl Rpc {
    /// RPCs whose credential is in the request, not a token: a token sent
    /// anyway is ignored, even an invalid one.
    fn is_public(self) -> bool {
        matches!(
            self,
            Rpc::VerifyApiKey
                | Rpc::CreateUser
                | Rpc::Login
                | Rpc::RefreshToken
                | Rpc::Check
                | Rpc::SettleReservation
                | Rpc::ReleaseReservation
        )
    }

    /// RPCs that name an existing object, so "missing" cells apply.
    fn targets_an_object(self) -> bool {
        matches!(
            self,
            Rpc::GetUser
                | Rpc::UpdateUser
                | Rpc::DeleteUser
                | Rpc::GetChatbot
                | Rpc::UpdateChatbot
                | Rpc::DeleteChatbot
                | Rpc::CreateApiKey
                | Rpc::GetApiKey
                | Rpc::UpdateApiKey
                | Rpc::ListApiKeys
                | Rpc::RevokeApiKey
                | Rpc::RotateApiKey
                | Rpc::DeleteApiKey
                | Rpc::GetApiKeyUsage
                | Rpc::GetChatbotUsage
                | Rpc::ListChatbots
                | Rpc::CreateChatbot
                | Rpc::GetOrganization
                | Rpc::UpdateOrganization
                | Rpc::DeleteOrganization
                | Rpc::ListMembers
                | Rpc::UpdateMember
                | Rpc::RemoveMember
                | Rpc::CreateInvitation
                | Rpc::ListInvitations
                | Rpc::DeleteInvitation
                | Rpc::AcceptInvitation
                | Rpc::GetOrganizationUsage
                | Rpc::CreateServiceAccount
                | Rpc::ListServiceAccounts
                | Rpc::RevokeServiceAccount
                | Rpc::DeleteServiceAccount
                | Rpc::SettleReservation
                | Rpc::ReleaseReservation
                | Rpc::WatchEvents
                | Rpc::CreateWebhook
                | Rpc::GetWebhook
                | Rpc::ListWebhooks
                | Rpc::UpdateWebhook
                | Rpc::DeleteWebhook
                | Rpc::ListWebhookDeliveries
                | Rpc::RedeliverWebhook
        )
    }

    fn admin_only(self) -> bool {
        matches!(self, Rpc::ListUsers | Rpc::GetDatabaseStatus)
    }

    /// RPCs about the caller alone, which any valid caller may use.
    fn about_the_caller(self) -> bool {
        matches!(
            self,
            Rpc::GetCurrentUser
                | Rpc::Logout
                | Rpc::ListAuditEvents
                | Rpc::CreateOrganization
                | Rpc::ListOrganizations
        )
    }

    /// README's table: what each RPC on the target needs.
    fn needs(self) -> Needs {
        match self {
            Rpc::GetUser | Rpc::UpdateUser | Rpc::DeleteUser => Needs::TheAccount,
            Rpc::GetChatbot
            | Rpc::ListChatbots
            | Rpc::GetApiKey
            | Rpc::ListApiKeys
            | Rpc::GetApiKeyUsage
            | Rpc::GetChatbotUsage
            | Rpc::GetOrganization
            | Rpc::ListMembers
            | Rpc::GetOrganizationUsage
            | Rpc::WatchEvents => Needs::View,
            Rpc::CreateChatbot
            | Rpc::UpdateChatbot
            | Rpc::DeleteChatbot
            | Rpc::CreateApiKey
            | Rpc::UpdateApiKey
            | Rpc::RevokeApiKey
            | Rpc::RotateApiKey
            | Rpc::DeleteApiKey => Needs::Edit,
            _ => Needs::Manage,
        }
    }

    /// What an owner or admin allowed to call it gets: OK, except where
    /// the target's state refuses it.
    fn allowed_answer(self) -> Code {
        match self {
            // The owner is the team's only owner.
            Rpc::DeleteUser => Code::FailedPrecondition,
            // The team still owns its chatbot.
            Rpc::DeleteOrganization => Code::FailedPrecondition,
            _ => Code::Ok,
        }
    }

    /// RPCs that change nothing a later cell could notice.
    fn is_read_only(self) -> bool {
        matches!(
            self,
            Rpc::GetUser
                | Rpc::ListUsers
                | Rpc::GetChatbot
                | Rpc::ListChatbots
                | Rpc::GetApiKey
                | Rpc::ListApiKeys
                | Rpc::VerifyApiKey
                | Rpc::GetApiKeyUsage
                | Rpc::GetChatbotUsage
                | Rpc::ListAuditEvents
                | Rpc::GetCurrentUser
                | Rpc::GetDatabaseStatus
                | Rpc::CreateOrganization
                | Rpc::GetOrganization
                | Rpc::ListOrganizations
                | Rpc::ListMembers
                | Rpc::ListInvitations
                | Rpc::GetOrganizationUsage
                | Rpc::ListServiceAccounts
                // Each makes a user, or a session, of its own.
                | Rpc::CreateUser
                | Rpc::Login
                | Rpc::Check
                // A repeat answers as the first did (same cost; released).
                | Rpc::SettleReservation
                | Rpc::ReleaseReservation
                | Rpc::WatchEvents
                | Rpc::GetWebhook
                | Rpc::ListWebhooks
                | Rpc::ListWebhookDeliveries
        )
    }
}

/// Whether a cell is meant to change what it targets, and so needs a
/// target of its own. The other cells share one: a refused call that
/// changed it anyway fails its own cell, whatever it does to the others.
fn changes_its_target(rpc: Rpc, who: Who) -> bool {
    !rpc.is_read_only() && expected(rpc, who) == Code::Ok
}

fn expected(rpc: Rpc, who: Who) -> Code {
    if rpc.is_public() {
        return match who {
            Who::UserOnMissing | Who::AdminOnMissing => Code::NotFound,
            _ => Code::Ok,
        };
    }
    let role_allows = |role: Needs| match rpc.needs() {
        Needs::TheAccount => false,
        needed => needed as u8 <= role as u8,
    };
    match who {
        Who::Anonymous
        | Who::BadToken(_)
        | Who::RevokedServiceAccount
        | Who::ExpiredServiceAccount => Code::Unauthenticated,
        // The invitation names someone else's email; a token that matches
        // none is NOT_FOUND to anyone.
        _ if rpc == Rpc::AcceptInvitation => match who {
            Who::UserOnMissing | Who::AdminOnMissing => Code::NotFound,
            _ => Code::PermissionDenied,
        },
        Who::Admin => rpc.allowed_answer(),
        _ if rpc.admin_only() => Code::PermissionDenied,
        // A service account acts in its organization by its role, and
        // does nothing only a person does (sessions, creating
        // organizations, accounts).
        Who::ServiceAccountEditor | Who::ServiceAccountViewer => {
            let role = match who {
                Who::ServiceAccountEditor => Needs::Edit,
                _ => Needs::View,
            };
            match rpc {
                Rpc::ListAuditEvents | Rpc::ListOrganizations => Code::Ok,
                _ if rpc.about_the_caller() => Code::PermissionDenied,
                _ if role_allows(role) => Code::Ok,
                _ => Code::PermissionDenied,
            }
        }
        _ if rpc.about_the_caller() => Code::Ok,
        Who::Owner => rpc.allowed_answer(),
        // The target member is the editor: removing oneself is leaving.
        Who::Editor if rpc == Rpc::RemoveMember => Code::Ok,
        Who::Editor if role_allows(Needs::Edit) => Code::Ok,
        Who::Viewer if role_allows(Needs::View) => Code::Ok,
        Who::Editor | Who::Viewer | Who::Stranger | Who::UserOnMissing => Code::PermissionDenied,
        Who::AdminOnMissing => Code::NotFound,
    }
}

/// Cells run this many at a time: they are independent (each that may
/// change its target has its own), and at the test pool's size none waits
/// long for a connection.
const CELLS_AT_ONCE: usize = 4;

backend_test! {
    async fn every_rpc_answers_each_kind_of_caller_with_the_documented_code() {
        use futures_util::StreamExt;

        let app = spawn_app_for_matrix().await;
        let stranger = app.new_user().await;
        let admin = app.new_admin().await;
        let bad = bad_tokens(&stranger.id);
        let mut whos = vec![Who::Anonymous];
        whos.extend((0..bad.len()).map(Who::BadToken));
        whos.extend([
            Who::Stranger,
            Who::Owner,
            Who::Editor,
            Who::Viewer,
            Who::ServiceAccountEditor,
            Who::ServiceAccountViewer,
            Who::RevokedServiceAccount,
            Who::ExpiredServiceAccount,
            Who::Admin,
            Who::UserOnMissing,
            Who::AdminOnMissing,
        ]);
        let shared = fresh_target(&app).await;

        let mut cells = Vec::new();
        for &rpc in ALL_RPCS {
            for &who in &whos {
                if matches!(who, Who::UserOnMissing | Who::AdminOnMissing)
                    && (!rpc.targets_an_object()
                        || rpc == Rpc::ListChatbots
                        || rpc == Rpc::CreateChatbot)
                {
                    continue;
                }
                cells.push((rpc, who));
            }
        }
        let run_cell = |(rpc, who): (Rpc, Who)| {
            let (app, shared, stranger, admin, bad) = (&app, &shared, &stranger, &admin, &bad);
            async move {
                let (team, target) = if matches!(who, Who::UserOnMissing | Who::AdminOnMissing) {
                    (None, missing_target())
                } else if changes_its_target(rpc, who) {
                    let (team, target) = fresh_target(app).await;
                    (Some(team), target)
                } else {
                    (Some(shared.0.clone()), shared.1.clone())
                };
                let token = match who {
                    Who::Anonymous => None,
                    Who::BadToken(i) => Some(bad[i].1.clone()),
                    Who::Stranger | Who::UserOnMissing => Some(stranger.token.clone()),
                    Who::Owner => team.map(|team| team.owner.token),
                    Who::Editor => team.map(|team| team.editor.token),
                    Who::Viewer => team.map(|team| team.viewer.token),
                    Who::ServiceAccountEditor => team.map(|team| team.account_editor),
                    Who::ServiceAccountViewer => team.map(|team| team.account_viewer),
                    Who::RevokedServiceAccount => team.map(|team| team.account_revoked),
                    Who::ExpiredServiceAccount => team.map(|team| team.account_expired),
                    Who::Admin | Who::AdminOnMissing => Some(admin.token.clone()),
                };
                let code = match call(app, rpc, token.as_deref(), &target).await {
                    Ok(()) => Code::Ok,
                    Err(status) => status.code(),
                };
                (rpc, who, code)
            }
        };
        let answers: Vec<(Rpc, Who, Code)> = futures_util::stream::iter(cells)
            .map(run_cell)
            .buffered(CELLS_AT_ONCE)
            .collect()
            .await;

        let mut failures = Vec::new();
        for &(rpc, who, code) in &answers {
            let want = expected(rpc, who);
            if code != want {
                let who = match who {
                    Who::BadToken(i) => format!("token {}", bad[i].0),
                    other => format!("{other:?}"),
                };
                failures.push(format!("{rpc:?} as {who}: got {code:?}, want {want:?}"));
            }
        }
        assert!(answers.len() > 600, "the matrix shrank to {} cells", answers.len());
        assert!(
            failures.is_empty(),
            "{} cells wrong:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

/// Every RPC of every chatbot.v1 service, and Envoy's Check, is in the
/// matrix: a new RPC fails here until its cells are added.
#[test]
fn the_matrix_has_every_rpc_of_the_contract() {
    use prost::Message;

    let files = prost_types::FileDescriptorSet::decode(chatbot_backend::proto::FILE_DESCRIPTOR_SET)
        .unwrap();
    let mut contract: Vec<String> = files
        .file
        .iter()
        .filter(|file| file.package() == "chatbot.v1")
        .flat_map(|file| &file.service)
        .flat_map(|service| &service.method)
        .map(|method| method.name().to_owned())
        .chain(["Check".to_owned()])
        .collect();
    let mut matrix: Vec<String> = ALL_RPCS.iter().map(|rpc| format!("{rpc:?}")).collect();
    contract.sort();
    matrix.sort();
    assert_eq!(matrix, contract);
}

async fn spawn_app_for_matrix() -> TestApp {
    // Many fresh owners log in; keep the throttle out of the way. Each
    // team's webhook points at a closed local port: its deliveries fail
    // and wait for their next attempt.
    spawn_app_with(&[
        "--login-max-failures-per-address",
        "100000",
        "--webhook-allow-private-targets",
        "true",
    ])
    .await
}
