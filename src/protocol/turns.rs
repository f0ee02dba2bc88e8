//! Threads, turns and their items: `thread/start`, `turn/start`, `turn/interrupt` and the
//! notifications of a turn. Only the fields authbridge fills are modelled; every field the
//! reference marks required is always written, so typed clients accept the messages.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rate_limits::RateLimitSnapshot;

/// Every field is optional; authbridge reads `model`, `cwd` and `ephemeral` and accepts
/// (ignores) the rest, since it runs no tools and writes no rollout.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThreadStartParams {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// `openai` or a key of `model_providers`; the configured `model_provider` when absent.
    #[serde(default)]
    pub model_provider: Option<String>,
    /// Threads are always ephemeral here; `false` is refused rather than silently ignored.
    #[serde(default)]
    pub ephemeral: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ThreadStatus {
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SessionSource {
    AppServer,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Thread {
    pub id: String,
    pub session_id: String,
    pub cli_version: String,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    pub cwd: String,
    pub ephemeral: bool,
    pub model: Option<String>,
    pub model_provider: String,
    pub originator: Option<String>,
    pub preview: String,
    pub project_id: Option<String>,
    pub source: SessionSource,
    pub status: ThreadStatus,
    /// Always empty outside resume/fork/read, which authbridge does not serve.
    pub turns: Vec<Turn>,
}

/// The policies authbridge reports: it runs no commands and applies no patches, so it
/// never asks for approval and nothing can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum AskForApproval {
    #[serde(rename = "never")]
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum ApprovalsReviewer {
    #[serde(rename = "user")]
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum SandboxPolicy {
    ReadOnly,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThreadStartResponse {
    pub thread: Thread,
    pub model: String,
    pub model_provider: String,
    pub cwd: String,
    pub approval_policy: AskForApproval,
    pub approvals_reviewer: ApprovalsReviewer,
    pub sandbox: SandboxPolicy,
    pub reasoning_effort: Option<String>,
    pub service_tier: Option<String>,
    pub instruction_sources: Vec<String>,
    pub disabled_plugin_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThreadStartedNotification {
    pub thread: Thread,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TextElement {
    #[serde(deserialize_with = "super::object::required")]
    pub byte_range: ByteRange,
    #[serde(default)]
    pub placeholder: Option<String>,
}

/// What a user sends. Only text is served; the other kinds of the protocol are recognised
/// so that the refusal can name them, never dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum UserInput {
    Text {
        text: String,
        #[serde(default)]
        text_elements: Vec<TextElement>,
    },
    Image {},
    LocalImage {},
    Audio {},
    LocalAudio {},
    Skill {},
    Mention {},
    #[serde(other)]
    Unknown,
}

impl UserInput {
    /// The kind's wire name.
    pub fn kind(&self) -> &'static str {
        match self {
            UserInput::Text { .. } => "text",
            UserInput::Image {} => "image",
            UserInput::LocalImage {} => "localImage",
            UserInput::Audio {} => "audio",
            UserInput::LocalAudio {} => "localAudio",
            UserInput::Skill {} => "skill",
            UserInput::Mention {} => "mention",
            UserInput::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnStartParams {
    pub thread_id: String,
    pub input: Vec<UserInput>,
    /// Overrides the thread's model for this turn and the ones after it.
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TurnStatus {
    InProgress,
    Completed,
    Interrupted,
    Failed,
}

/// Why a turn failed, in the reference's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CodexErrorInfo {
    ContextWindowExceeded,
    UsageLimitExceeded,
    RateLimitExceeded,
    ServerOverloaded,
    Unauthorized,
    BadRequest,
    Other,
    ResponseStreamConnectionFailed {
        #[serde(rename = "httpStatusCode")]
        http_status_code: Option<u16>,
    },
    ResponseStreamDisconnected {
        #[serde(rename = "httpStatusCode")]
        http_status_code: Option<u16>,
    },
    /// The request was refused under the biological-risk policy (Codex 0.171).
    BioPolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnError {
    pub message: String,
    pub codex_error_info: Option<CodexErrorInfo>,
    /// For `unauthorized`, the `authError` name documented in the README.
    pub additional_details: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Turn {
    pub id: String,
    /// Always empty in notifications, as in the reference; items travel in `item/*`.
    pub items: Vec<ThreadItem>,
    pub status: TurnStatus,
    pub error: Option<TurnError>,
    /// Unix seconds.
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnStartResponse {
    pub turn: Turn,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnInterruptParams {
    pub thread_id: String,
    pub turn_id: String,
}

#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct TurnInterruptResponse {}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnStartedNotification {
    pub thread_id: String,
    pub turn: Turn,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnCompletedNotification {
    pub thread_id: String,
    pub turn: Turn,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ThreadItem {
    UserMessage { id: String, content: Vec<UserInput> },
    AgentMessage { id: String, text: String },
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemStartedNotification {
    pub thread_id: String,
    pub turn_id: String,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    pub item: ThreadItem,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemCompletedNotification {
    pub thread_id: String,
    pub turn_id: String,
    /// Unix milliseconds.
    pub completed_at_ms: i64,
    pub item: ThreadItem,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentMessageDeltaNotification<'a> {
    pub thread_id: &'a str,
    pub turn_id: &'a str,
    pub item_id: &'a str,
    pub delta: &'a str,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorNotification {
    pub thread_id: String,
    pub turn_id: String,
    pub will_retry: bool,
    pub error: TurnError,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsageBreakdown {
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_output_tokens: i64,
    pub total_tokens: i64,
}

impl std::ops::AddAssign for TokenUsageBreakdown {
    fn add_assign(&mut self, o: Self) {
        self.input_tokens += o.input_tokens;
        self.cached_input_tokens += o.cached_input_tokens;
        self.output_tokens += o.output_tokens;
        self.reasoning_output_tokens += o.reasoning_output_tokens;
        self.total_tokens += o.total_tokens;
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThreadTokenUsage {
    pub total: TokenUsageBreakdown,
    pub last: TokenUsageBreakdown,
    pub model_context_window: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThreadTokenUsageUpdatedNotification {
    pub thread_id: String,
    pub turn_id: String,
    pub token_usage: ThreadTokenUsage,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountRateLimitsUpdatedNotification {
    pub rate_limits: RateLimitSnapshot,
}

/// `modelProvider/authRecoveryStarted` and `…Completed`: a turn's backend call is waiting
/// for (or just got) new credentials after a 401.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthRecoveryNotification {
    pub thread_id: String,
    pub turn_id: String,
    pub provider: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::decode::decode_object;

    #[test]
    fn every_input_kind_is_recognised_and_text_elements_keep_their_wire_name() {
        let p: TurnStartParams = decode_object(
            &json!({"threadId": "t", "input": [
                {"type": "text", "text": "hi", "text_elements": [{"byteRange": {"start": 0, "end": 2}}]},
                {"type": "localImage", "path": "/x.png"},
                {"type": "someday", "what": 1}
            ]})
            .to_string(),
        )
        .unwrap();
        let kinds: Vec<&str> = p.input.iter().map(UserInput::kind).collect();
        assert_eq!(kinds, ["text", "localImage", "unknown"]);
        let back = serde_json::to_value(&p.input[0]).unwrap();
        assert_eq!(back["text_elements"][0]["byteRange"]["end"], 2);
    }

    #[test]
    fn error_info_uses_the_reference_spelling() {
        let v = serde_json::to_value(CodexErrorInfo::ResponseStreamConnectionFailed {
            http_status_code: Some(503),
        })
        .unwrap();
        assert_eq!(
            v,
            json!({"responseStreamConnectionFailed": {"httpStatusCode": 503}})
        );
        assert_eq!(
            serde_json::to_value(CodexErrorInfo::Unauthorized).unwrap(),
            json!("unauthorized")
        );
    }
}
