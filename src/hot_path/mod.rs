//! Machinery that exists for speed, kept out of the handlers so that an RPC
//! still reads top to bottom and so that what each piece promises is stated
//! in one place. None of it changes an answer (batched credit spends answer
//! as one spend at a time would); each piece only avoids work:
//!
//! - [`api_key_cache`]: VerifyApiKey answers a hot key without a query. It
//!   caches the row, not the verdict, so revocation and expiry are judged at
//!   every read, and it never serves a row a committed change made stale.
//! - [`known_keys`]: VerifyApiKey answers a well-formed key that does not
//!   exist without a query, on every replica, and never "not found" for a
//!   key whose creation has committed anywhere.
//! - [`chatbot_cache`]: GetChatbot answers a chatbot read lately without a
//!   query; like the VerifyApiKey cache, it never serves a row a committed
//!   change made stale.
//! - [`chatbot_pages`]: ListChatbots answers a page listed lately from
//!   the bytes it was encoded to; a cached page is served only once every
//!   change committed before the call, on any replica, has been heard.
//! - [`read_coalescing`]: GetChatbot's point reads that the cache cannot
//!   answer and that arrive together go to the database as one statement;
//!   a read still sees every write committed before it arrived.
//! - [`last_used`]: VerifyApiKey writes no last-used time per call; they are written
//!   in one batch per interval, and a failed batch is retried, never lost
//!   or moved back in time.
//! - [`usage`]: VerifyApiKey's answers are counted per key and hour in
//!   memory and added to the store in one batch per interval, like
//!   last-used times.
//! - [`credit_spends`]: VerifyApiKey's spends on keys with credits that
//!   arrive together settle in one statement, each answered once it
//!   commits; balances never go below zero, on any number of replicas.
//! - [`batch_queue`]: the queue both of those batch through.
//! - [`invalidation`]: every change to a cached row commits together with
//!   the NOTIFY that tells the other replicas, and drops the row here before
//!   the RPC answers; the listener applies other replicas' notifications,
//!   and the caches serve only while it can hear them.

pub mod api_key_cache;
pub mod batch_queue;
pub mod chatbot_cache;
pub mod chatbot_pages;
pub mod credit_spends;
pub mod invalidation;
pub mod known_keys;
pub mod last_used;
pub mod read_coalescing;
pub mod usage;

pub use api_key_cache::ApiKeyCache;
pub use chatbot_cache::ChatbotCache;
pub use chatbot_pages::ChatbotPages;
pub use credit_spends::{CreditSpends, Finish, Hold, SpendOutcome};
pub use invalidation::CacheInvalidation;
pub use known_keys::KnownKeys;
pub use last_used::LastUsedRecorder;
pub use read_coalescing::{ChatbotReads, ReadStats};
pub use usage::UsageRecorder;
