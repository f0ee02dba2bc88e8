//! `thread/start`, `turn/start`, `turn/interrupt`. The handlers only check and register;
//! a turn's work runs in its own task (`turn_run`), started once the `turn/start` result
//! is on the wire so that `turn/started` never overtakes it.

use futures::FutureExt;

use super::NeedsChatgpt;
use super::turn_run::{Notifier, TurnTask};
use super::{Api, ApiError};
use crate::backend::Caller;
use crate::backend::responses::StreamLimits;
use crate::protocol::methods;
use crate::protocol::turns::{
    ApprovalsReviewer, AskForApproval, SandboxPolicy, SessionSource, Thread, ThreadStartParams,
    ThreadStartResponse, ThreadStartedNotification, ThreadStatus, Turn, TurnInterruptParams,
    TurnInterruptResponse, TurnStartParams, TurnStartResponse, TurnStatus, UserInput,
};
use crate::rpc::RequestContext;

fn thread_view(t: &super::threads::ThreadState, originator: &str) -> Thread {
    Thread {
        id: t.id.clone(),
        session_id: t.id.clone(),
        cli_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: t.created_at,
        updated_at: t.created_at,
        cwd: t.cwd.clone(),
        ephemeral: true,
        model: Some(t.model()),
        model_provider: t.provider.clone(),
        originator: Some(originator.to_owned()),
        preview: t.preview(),
        project_id: None,
        source: SessionSource::AppServer,
        status: ThreadStatus::Idle,
        turns: vec![],
    }
}

/// The working directory reported for a thread: the client's, made absolute, else ours.
fn cwd(requested: Option<String>) -> String {
    let here = std::env::current_dir().unwrap_or_else(|_| "/".into());
    match requested {
        Some(c) if std::path::Path::new(&c).is_absolute() => c,
        Some(c) => here.join(c).display().to_string(),
        None => here.display().to_string(),
    }
}

pub(super) async fn thread_start(
    api: &Api,
    ctx: &RequestContext,
    p: ThreadStartParams,
) -> Result<ThreadStartResponse, ApiError> {
    let session = api.session(ctx)?;
    if p.ephemeral == Some(false) {
        return Err(ApiError::NotEphemeral);
    }
    let model = p.model.unwrap_or_else(|| api.config.model.clone());
    let provider = p
        .model_provider
        .unwrap_or_else(|| api.config.model_provider.clone());
    if !api.providers.knows(&provider) {
        return Err(ApiError::UnknownProvider(provider));
    }
    let thread = api.threads.create(
        ctx.peer.id(),
        model.clone(),
        provider.clone(),
        cwd(p.cwd),
        api.config.max_backend_body_bytes,
    );
    let view = thread_view(&thread, &session.client_name);
    let notifier = Notifier {
        peer: ctx.peer.clone(),
        session,
    };
    let started = ThreadStartedNotification {
        thread: view.clone(),
    };
    ctx.after.push(async move {
        notifier.send(methods::THREAD_STARTED, &started).await;
    });
    Ok(ThreadStartResponse {
        cwd: view.cwd.clone(),
        thread: view,
        model,
        model_provider: provider,
        approval_policy: AskForApproval::Never,
        approvals_reviewer: ApprovalsReviewer::User,
        sandbox: SandboxPolicy::ReadOnly,
        reasoning_effort: None,
        service_tier: None,
        instruction_sources: vec![],
        disabled_plugin_ids: vec![],
    })
}

/// The text of a turn's input: text items only, refused whole otherwise.
fn input_text(input: &[UserInput]) -> Result<String, ApiError> {
    if input.is_empty() {
        return Err(ApiError::EmptyInput);
    }
    let mut parts = Vec::with_capacity(input.len());
    for item in input {
        match item {
            UserInput::Text { text, .. } => parts.push(text.as_str()),
            other => return Err(ApiError::UnsupportedInput(other.kind())),
        }
    }
    Ok(parts.join("\n"))
}

pub(super) async fn turn_start(
    api: &Api,
    ctx: &RequestContext,
    p: TurnStartParams,
) -> Result<TurnStartResponse, ApiError> {
    let session = api.session(ctx)?;
    let text = input_text(&p.input)?;
    let thread = api.threads.get(ctx.peer.id(), &p.thread_id)?;
    let openai = if api.providers.requires_openai_auth(&thread.provider) {
        Some(
            api.openai_auth(NeedsChatgpt {
                signed_out: "codex account authentication required to start a turn",
                api_key: "unused: an API key runs turns",
                failed: "failed to start a turn",
            })
            .await?,
        )
    } else {
        None
    };
    let route = api.providers.route(&thread.provider, openai);
    let turn_id = uuid::Uuid::now_v7().to_string();
    let start = thread.begin(&turn_id, p.model)?;
    let started_at_ms = crate::rpc::peer::now_ms() as i64;
    let turn = Turn {
        id: turn_id.clone(),
        items: vec![],
        status: TurnStatus::InProgress,
        error: None,
        started_at: Some(started_at_ms / 1000),
        completed_at: None,
        duration_ms: None,
    };
    let task = TurnTask {
        backend: api.backend.clone(),
        route,
        caller: Caller {
            user_agent: session.user_agent.clone(),
            originator: session.client_name.clone(),
        },
        notifier: Notifier {
            peer: ctx.peer.clone(),
            session,
        },
        thread: thread.clone(),
        turn_id: turn_id.clone(),
        started_at_ms,
        model: start.model,
        instructions: api.instructions.clone(),
        history: start.history,
        input: p.input,
        text,
        cancel: start.cancel,
        limits: StreamLimits {
            max_event_bytes: api.config.max_backend_body_bytes,
            idle: api.config.stream_idle_timeout,
        },
        max_text_bytes: api.config.max_backend_body_bytes,
    };
    ctx.after.push(async move {
        let run = async move {
            // A panic must not leave the thread busy for good.
            if std::panic::AssertUnwindSafe(task.run())
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!("a turn task panicked");
                thread.finish(&turn_id, vec![], None);
            }
        };
        tokio::spawn(run);
    });
    Ok(TurnStartResponse { turn })
}

pub(super) async fn turn_interrupt(
    api: &Api,
    ctx: &RequestContext,
    p: TurnInterruptParams,
) -> Result<TurnInterruptResponse, ApiError> {
    api.session(ctx)?;
    let thread = api.threads.get(ctx.peer.id(), &p.thread_id)?;
    thread.interrupt(&p.turn_id)?;
    Ok(TurnInterruptResponse {})
}
