//! One module per table: the row type, its insert/changeset types and every
//! query on that table, as associated functions taking the connection.

pub mod api_key;
pub mod chatbot;
pub mod login_attempt;
pub mod refresh_token;
pub mod session;
pub mod user;

pub use api_key::{ApiKey, NewApiKey, VerificationRecord};
pub use chatbot::{Chatbot, ChatbotChanges, NewChatbot};
pub use login_attempt::{LoginAttempt, Window};
pub use refresh_token::{NewRefreshToken, RefreshToken};
pub use session::{LiveSession, Session};
pub use user::{NewUser, User, UserChanges};
