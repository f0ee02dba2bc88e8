//! `POST …/responses`: one streamed model response (the ChatGPT backend's
//! `{base}/codex/responses`, the OpenAI API's or a custom provider's), sent through the
//! client's 401 loop, read as server-sent events and decoded into the few events a text
//! turn needs.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::client::{
    BackendClient, BackendError, Call, CallAuth, Caller, RecoveryObserver,
    describe_transport_error, header_value,
};
use super::rate_limits::MAIN_LIMIT_ID;
use super::sse::{self, SseError};
use crate::protocol::rate_limits::{CreditsSnapshot, RateLimitSnapshot, RateLimitWindow};

/// Who said what so far, oldest first: the context a turn sends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Message {
    User(String),
    Assistant(String),
}

/// What a turn asks of the model.
pub(crate) struct TurnRequest<'a> {
    pub model: &'a str,
    pub instructions: &'a str,
    /// The thread id: the conversation's session header and prompt-cache key.
    pub session_id: &'a str,
    pub input: &'a [Message],
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    instructions: &'a str,
    input: Vec<InputItem<'a>>,
    tools: [(); 0],
    tool_choice: &'static str,
    parallel_tool_calls: bool,
    store: bool,
    stream: bool,
    include: [(); 0],
    prompt_cache_key: &'a str,
}

#[derive(Serialize)]
struct InputItem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    content: [Content<'a>; 1],
}

#[derive(Serialize)]
struct Content<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

impl TurnRequest<'_> {
    fn body(&self) -> Vec<u8> {
        let input = self
            .input
            .iter()
            .map(|m| {
                let (role, kind, text) = match m {
                    Message::User(t) => ("user", "input_text", t),
                    Message::Assistant(t) => ("assistant", "output_text", t),
                };
                InputItem {
                    kind: "message",
                    role,
                    content: [Content { kind, text }],
                }
            })
            .collect();
        let body = Body {
            model: self.model,
            instructions: self.instructions,
            input,
            tools: [],
            tool_choice: "auto",
            parallel_tool_calls: false,
            store: false,
            stream: true,
            include: [],
            prompt_cache_key: self.session_id,
        };
        serde_json::to_vec(&body).expect("the request body serializes")
    }
}

/// Token counts of one response, as the backend reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub(crate) struct Usage {
    #[serde(default)]
    pub input_tokens: i64,
    #[serde(default)]
    pub input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    pub output_tokens: i64,
    #[serde(default)]
    pub output_tokens_details: Option<OutputDetails>,
    #[serde(default)]
    pub total_tokens: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub(crate) struct InputDetails {
    #[serde(default)]
    pub cached_tokens: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub(crate) struct OutputDetails {
    #[serde(default)]
    pub reasoning_tokens: i64,
}

/// `response.failed`'s error.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct FailedError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// The events a text turn acts on; everything else is skipped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ResponseEvent {
    TextDelta(String),
    /// A finished assistant message with its whole text.
    MessageDone(String),
    Completed(Option<Usage>),
    Failed(FailedError),
}

/// Why a response stream ended early.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum StreamError {
    #[error(transparent)]
    Sse(#[from] SseError),
    #[error("stream closed before response.completed")]
    ClosedEarly,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    delta: Option<String>,
    #[serde(default)]
    item: Option<RawItem>,
    #[serde(default)]
    response: Option<RawResponse>,
}

#[derive(Deserialize)]
struct RawItem {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Vec<RawContent>,
}

#[derive(Deserialize)]
struct RawContent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct RawResponse {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<FailedError>,
}

/// One event's JSON into what a turn needs. The JSON's `type` decides, not the SSE
/// `event:` line, as in the reference; unparsable or unknown events are skipped.
pub(crate) fn decode(data: &str) -> Option<ResponseEvent> {
    let raw: Raw = serde_json::from_str(data).ok()?;
    match raw.kind.as_str() {
        "response.output_text.delta" => raw.delta.map(ResponseEvent::TextDelta),
        "response.output_item.done" => {
            let item = raw.item?;
            if item.kind != "message" || item.role.as_deref() != Some("assistant") {
                return None;
            }
            let text: String = item
                .content
                .into_iter()
                .filter(|c| c.kind == "output_text")
                .filter_map(|c| c.text)
                .collect();
            Some(ResponseEvent::MessageDone(text))
        }
        "response.completed" => Some(ResponseEvent::Completed(raw.response.and_then(|r| r.usage))),
        "response.failed" => Some(ResponseEvent::Failed(
            raw.response.and_then(|r| r.error).unwrap_or_default(),
        )),
        _ => None,
    }
}

/// An open response stream: its rate-limit headers and its events.
pub(crate) struct ResponseStream {
    pub status: StatusCode,
    pub rate_limits: Option<RateLimitSnapshot>,
    pub events: std::pin::Pin<Box<dyn Stream<Item = Result<ResponseEvent, StreamError>> + Send>>,
}

/// Bounds of one response stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamLimits {
    pub max_event_bytes: usize,
    pub idle: Duration,
}

const VERSION_HEADER: HeaderName = HeaderName::from_static("version");
const SESSION_HEADER: HeaderName = HeaderName::from_static("session_id");
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-client-request-id");

/// Where one response is asked for: the URL (with any query), the provider's own
/// headers, and the source of the bearer.
pub(crate) struct Target<'a> {
    pub url: &'a str,
    pub headers: &'a HeaderMap,
    pub auth: &'a dyn CallAuth,
}

impl BackendClient {
    /// Opens the stream of one model response. A 401 is recovered once (told to
    /// `observer`) when the target's bearer can be replaced; any other failed status is an
    /// error carrying it.
    pub async fn stream_response(
        &self,
        caller: &Caller,
        target: &Target<'_>,
        request: &TurnRequest<'_>,
        limits: StreamLimits,
        observer: &dyn RecoveryObserver,
    ) -> Result<ResponseStream, BackendError> {
        let mut headers = target.headers.clone();
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            VERSION_HEADER,
            HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
        );
        headers.insert(SESSION_HEADER, header_value(request.session_id));
        headers.insert(
            REQUEST_ID_HEADER,
            header_value(&uuid::Uuid::new_v4().to_string()),
        );
        let call = Call {
            method: Method::POST,
            url: target.url,
            headers,
            body: Some(Bytes::from(request.body())),
            streaming: true,
        };
        let response = self
            .authorized_by(caller, &call, target.auth, observer)
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.status_error(&call, response).await);
        }
        let rate_limits = rate_limits_from_headers(response.headers());
        let body = response
            .bytes_stream()
            .map(|chunk| chunk.map_err(|e| describe_transport_error(&e)));
        let events = sse::events(Box::pin(body), limits.max_event_bytes, limits.idle)
            .filter_map(|item| {
                futures::future::ready(match item {
                    Ok(event) => decode(&event.data).map(Ok),
                    Err(e) => Some(Err(StreamError::Sse(e))),
                })
            })
            .chain(futures::stream::once(async {
                Err(StreamError::ClosedEarly)
            }));
        Ok(ResponseStream {
            status,
            rate_limits,
            events: Box::pin(events),
        })
    }
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn header_window(headers: &HeaderMap, which: &str) -> Option<RateLimitWindow> {
    let used = header_number(headers, &format!("x-codex-{which}-used-percent"))?;
    let minutes = header_number(headers, &format!("x-codex-{which}-window-minutes"));
    let reset = header_number(headers, &format!("x-codex-{which}-reset-at"));
    Some(RateLimitWindow {
        used_percent: used.round().clamp(0.0, i32::MAX as f64) as i32,
        window_duration_mins: minutes.map(|m| m as i64),
        resets_at: reset.map(|r| r as i64),
    })
}

/// The `x-codex-*` rate-limit headers of a response, when it carries any.
pub(crate) fn rate_limits_from_headers(headers: &HeaderMap) -> Option<RateLimitSnapshot> {
    let primary = header_window(headers, "primary");
    let secondary = header_window(headers, "secondary");
    let flag = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().eq_ignore_ascii_case("true"))
    };
    let credits = flag("x-codex-credits-has-credits").map(|has_credits| CreditsSnapshot {
        has_credits,
        unlimited: flag("x-codex-credits-unlimited").unwrap_or(false),
        balance: headers
            .get("x-codex-credits-balance")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().chars().take(64).collect()),
    });
    if primary.is_none() && secondary.is_none() && credits.is_none() {
        return None;
    }
    Some(RateLimitSnapshot {
        limit_id: Some(MAIN_LIMIT_ID.to_owned()),
        limit_name: None,
        primary,
        secondary,
        credits,
        plan_type: None,
        rate_limit_reached_type: None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn the_body_is_the_reference_minimum_with_history() {
        let input = [
            Message::User("hi".into()),
            Message::Assistant("hello".into()),
            Message::User("again".into()),
        ];
        let r = TurnRequest {
            model: "m",
            instructions: "be brief",
            session_id: "t-1",
            input: &input,
        };
        let body: Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(body["store"], false);
        assert_eq!(body["stream"], true);
        assert_eq!(body["tools"], json!([]));
        assert_eq!(body["prompt_cache_key"], "t-1");
        assert_eq!(
            body["input"][1],
            json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]})
        );
        assert_eq!(body["input"][2]["content"][0]["type"], "input_text");
    }

    #[test]
    fn events_decode_by_their_json_type() {
        assert_eq!(
            decode(r#"{"type":"response.output_text.delta","delta":"He"}"#),
            Some(ResponseEvent::TextDelta("He".into()))
        );
        assert_eq!(
            decode(
                r#"{"type":"response.output_item.done","item":{"type":"message","role":"assistant","id":"m","content":[{"type":"output_text","text":"Hello"}]}}"#
            ),
            Some(ResponseEvent::MessageDone("Hello".into()))
        );
        let done = decode(
            r#"{"type":"response.completed","response":{"id":"r","usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":1},"output_tokens":2,"total_tokens":7}}}"#,
        );
        let Some(ResponseEvent::Completed(Some(u))) = done else {
            panic!("{done:?}")
        };
        assert_eq!((u.input_tokens, u.total_tokens), (5, 7));
        assert_eq!(
            decode(
                r#"{"type":"response.failed","response":{"error":{"code":"context_length_exceeded","message":"too long"}}}"#
            ),
            Some(ResponseEvent::Failed(FailedError {
                code: Some("context_length_exceeded".into()),
                message: Some("too long".into())
            }))
        );
        assert_eq!(decode(r#"{"type":"response.created","response":{}}"#), None);
        assert_eq!(decode("not json"), None);
    }

    #[test]
    fn rate_limit_headers_make_a_snapshot() {
        let mut h = HeaderMap::new();
        assert_eq!(rate_limits_from_headers(&h), None);
        h.insert("x-codex-primary-used-percent", "12.6".parse().unwrap());
        h.insert("x-codex-primary-window-minutes", "300".parse().unwrap());
        h.insert("x-codex-credits-has-credits", "true".parse().unwrap());
        let s = rate_limits_from_headers(&h).unwrap();
        assert_eq!(s.primary.unwrap().used_percent, 13);
        assert!(s.credits.unwrap().has_credits);
        assert_eq!(s.limit_id.as_deref(), Some("codex"));
    }
}
