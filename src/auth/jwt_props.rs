//! Properties of the JWT claims reader: claims put in any payload come back out, and
//! nothing a caller passes in ever shows up in an error.

use base64::Engine;
use proptest::prelude::*;

use crate::props::json_value;
use serde_json::{Map, Value, json};

use super::jwt::{Claims, JwtError, parse};
use crate::vocabulary::PlanType;

const CLAIM_KEYS: [&str; 4] = [
    "email",
    "exp",
    "https://api.openai.com/auth",
    "https://api.openai.com/profile",
];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Spellings of plans as tokens carry them, with what they read as.
fn plan() -> impl Strategy<Value = (String, PlanType)> {
    let known = prop::sample::select(vec![
        ("plus", PlanType::Plus),
        ("free", PlanType::Free),
        ("team", PlanType::Team),
        ("enterprise", PlanType::Enterprise),
        ("hc", PlanType::Enterprise),
        ("education", PlanType::Edu),
        ("edu_plus", PlanType::EduPlus),
        (
            "self_serve_business_usage_based",
            PlanType::SelfServeBusinessUsageBased,
        ),
        ("platinum", PlanType::Unknown),
    ]);
    (known, prop::collection::vec(any::<bool>(), 32), "[ ]{0,2}").prop_map(
        |((name, plan), upper, pad)| {
            let cased: String = name
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect();
            (format!("{pad}{cased}{pad}"), plan)
        },
    )
}

#[derive(Debug, Clone)]
struct Spec {
    email: Option<String>,
    profile_email: Option<String>,
    exp: Option<i64>,
    account_id: Option<String>,
    plan: Option<(String, PlanType)>,
    user_id: Option<String>,
    legacy_user_id: Option<String>,
    extra: Map<String, Value>,
    auth_extra: Map<String, Value>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let text = || prop::option::of("\\PC{0,16}");
    let members = || {
        prop::collection::btree_map("\\PC{0,10}", json_value(), 0..4)
            .prop_map(|m| m.into_iter().collect::<Map<_, _>>())
    };
    (
        (text(), text(), prop::option::of(any::<i64>())),
        (text(), prop::option::of(plan()), text(), text()),
        (members(), members()),
    )
        .prop_map(
            |(
                (email, profile_email, exp),
                (account_id, plan, user_id, legacy_user_id),
                (extra, auth_extra),
            )| Spec {
                email,
                profile_email,
                exp,
                account_id,
                plan,
                user_id,
                legacy_user_id,
                extra,
                auth_extra,
            },
        )
}

impl Spec {
    fn payload(&self) -> Value {
        let mut map = self.extra.clone();
        for key in CLAIM_KEYS {
            map.remove(key);
        }
        let mut auth = self.auth_extra.clone();
        for key in [
            "chatgpt_account_id",
            "chatgpt_plan_type",
            "chatgpt_user_id",
            "user_id",
        ] {
            auth.remove(key);
        }
        let put = |m: &mut Map<String, Value>, k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put(
            &mut auth,
            "chatgpt_account_id",
            self.account_id.clone().map(Value::from),
        );
        put(
            &mut auth,
            "chatgpt_plan_type",
            self.plan.clone().map(|(p, _)| Value::from(p)),
        );
        put(
            &mut auth,
            "chatgpt_user_id",
            self.user_id.clone().map(Value::from),
        );
        put(
            &mut auth,
            "user_id",
            self.legacy_user_id.clone().map(Value::from),
        );
        put(&mut map, "email", self.email.clone().map(Value::from));
        put(&mut map, "exp", self.exp.map(Value::from));
        map.insert("https://api.openai.com/auth".into(), Value::Object(auth));
        if let Some(e) = &self.profile_email {
            map.insert(
                "https://api.openai.com/profile".into(),
                json!({ "email": e }),
            );
        }
        Value::Object(map)
    }

    fn expected(&self) -> Claims {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Claims {
            email: nonempty(&self.email).or_else(|| nonempty(&self.profile_email)),
            exp: self.exp,
            chatgpt_account_id: nonempty(&self.account_id),
            chatgpt_plan_type: self
                .plan
                .as_ref()
                .filter(|(p, _)| !p.is_empty())
                .map(|(_, plan)| *plan),
            chatgpt_user_id: nonempty(&self.user_id).or_else(|| nonempty(&self.legacy_user_id)),
        }
    }
}

/// A long token-like value that no error message can contain by chance.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{24,40}".prop_map(|s| format!("sk-{s}"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn claims_round_trip_through_any_payload(
        spec in spec(),
        header in "[A-Za-z0-9_-]{1,20}",
        signature in "[A-Za-z0-9_-]{1,20}",
        padded in any::<bool>(),
    ) {
        let mut payload = b64(spec.payload().to_string().as_bytes());
        if padded {
            while !payload.len().is_multiple_of(4) {
                payload.push('=');
            }
        }
        let token = format!("{header}.{payload}.{signature}");
        prop_assert_eq!(parse(&token), Ok(spec.expected()));
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_refused(value in json_value()) {
        prop_assume!(!value.is_object());
        let token = format!("h.{}.s", b64(value.to_string().as_bytes()));
        prop_assert_eq!(parse(&token), Err(JwtError::Payload));
    }

    #[test]
    fn anything_but_three_non_empty_parts_is_a_shape_error(
        parts in prop::collection::vec("[A-Za-z0-9_-]{0,6}", 0..6),
    ) {
        prop_assume!(parts.len() != 3 || parts.iter().any(String::is_empty));
        prop_assert_eq!(parse(&parts.join(".")), Err(JwtError::Shape));
    }

    #[test]
    fn arbitrary_input_never_panics_nor_shows_up_in_the_error(token in "\\PC{0,80}|[A-Za-z0-9_=.-]{0,80}") {
        if let Err(e) = parse(&token) {
            let shown = format!("{e} {e:?}");
            // Every input of a few characters; shorter ones could be any word.
            prop_assert!(token.len() < 6 || !shown.contains(&token), "{shown}");
        }
    }

    #[test]
    fn a_secret_anywhere_in_a_bad_token_never_shows_up_in_the_error(
        secret in secret(),
        before in "[A-Za-z0-9_=.!-]{0,12}",
        after in "[A-Za-z0-9_=.!-]{0,12}",
    ) {
        let token = format!("{before}{secret}{after}");
        if let Err(e) = parse(&token) {
            let shown = format!("{e} {e:?}");
            prop_assert!(!shown.contains(&secret), "{}", shown);
        }
    }
}
