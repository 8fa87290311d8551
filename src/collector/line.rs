//! The event line format (`docs/events.md`): one JSON object per line, mapped to the wire
//! `Event` and checked as `licensing` would check it, so that a bad line is reported with its
//! file and line number here instead of as a refusal, far from its origin, later.
//!
//! Unknown fields are refused, and so are fields of another kind (a `quantity` on a login): a
//! typo must be an error, not a silent default.

use serde::Deserialize;

use crate::{api, convert::from_proto};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    source: Option<String>,
    event_id: String,
    account_id: String,
    member_id: String,
    occurred_at: String,
    kind: String,
    queue_id: Option<String>,
    meter: Option<String>,
    quantity: Option<u64>,
}

/// Why a line is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(String);

/// The kinds, as written in lines.
const KINDS: &str = "agent_login, agent_logout, queue_login, queue_logout or metered_usage";
/// The meters, as written in lines.
const METERS: &str = "speech_to_text_minutes, smart_routing_packs, ai_topics_packs or ai_qa_packs";

/// Parses one line into an event, with `default_source` when the line names none.
pub fn parse(text: &str, default_source: &str) -> Result<api::Event, Malformed> {
    let line: Line = serde_json::from_str(text).map_err(|e| {
        // serde_json says "at line 1 column N": a line of the file is always line 1 to it.
        let message = e.to_string();
        let message = match message.rsplit_once(" at line ") {
            Some((problem, _)) => format!("{problem} (at column {})", e.column()),
            None => message,
        };
        Malformed(message)
    })?;
    let at: jiff::Timestamp = line.occurred_at.parse().map_err(|e| {
        Malformed(format!(
            "occurred_at {:?}: {e} (expected RFC 3339 with an offset, e.g. 2026-05-10T08:00:00Z)",
            line.occurred_at
        ))
    })?;
    let kind = kind(&line)?;
    let event = api::Event {
        source: line.source.unwrap_or_else(|| default_source.to_owned()),
        event_id: line.event_id,
        account_id: line.account_id,
        member_id: line.member_id,
        occurred_at: Some(prost_types::Timestamp {
            seconds: at.as_second(),
            nanos: at.subsec_nanosecond(),
        }),
        kind: Some(kind),
    };
    check(&event).map_err(|refusal| Malformed(refusal.to_string()))?;
    Ok(event)
}

/// Checks an event as `licensing` checks it before looking at any stored state (ids, lengths,
/// timestamp, kind, quantity): what fails here would be refused INVALID there.
pub fn check(event: &api::Event) -> Result<(), licensing_core::Refusal> {
    from_proto::event(event.clone())?.validate()
}

fn kind(line: &Line) -> Result<api::event::Kind, Malformed> {
    use api::event::Kind;
    let kind = line.kind.as_str();
    // The fields each kind may carry besides the common ones.
    let allowed: &[&str] = match kind {
        "agent_login" | "agent_logout" => &[],
        "queue_login" | "queue_logout" => &["queue_id"],
        "metered_usage" => &["meter", "quantity"],
        other => return Err(Malformed(format!("kind {other:?}: expected {KINDS}"))),
    };
    for (field, present) in [
        ("queue_id", line.queue_id.is_some()),
        ("meter", line.meter.is_some()),
        ("quantity", line.quantity.is_some()),
    ] {
        if present && !allowed.contains(&field) {
            return Err(Malformed(format!("{field} does not belong to kind {kind}")));
        }
    }
    let queue = || {
        line.queue_id
            .clone()
            .ok_or_else(|| Malformed(format!("kind {kind} needs queue_id")))
    };
    Ok(match kind {
        "agent_login" => Kind::AgentLogin(api::AgentLogin {}),
        "agent_logout" => Kind::AgentLogout(api::AgentLogout {}),
        "queue_login" => Kind::QueueLogin(api::QueueLogin { queue_id: queue()? }),
        "queue_logout" => Kind::QueueLogout(api::QueueLogout { queue_id: queue()? }),
        _ => {
            let meter = match line.meter.as_deref() {
                Some("speech_to_text_minutes") => api::Meter::SpeechToTextMinutes,
                Some("smart_routing_packs") => api::Meter::SmartRoutingPacks,
                Some("ai_topics_packs") => api::Meter::AiTopicsPacks,
                Some("ai_qa_packs") => api::Meter::AiQaPacks,
                Some(other) => {
                    return Err(Malformed(format!("meter {other:?}: expected {METERS}")));
                }
                None => return Err(Malformed(format!("kind {kind} needs meter"))),
            };
            let quantity = line
                .quantity
                .ok_or_else(|| Malformed(format!("kind {kind} needs quantity")))?;
            Kind::MeteredUsage(api::MeteredUsage {
                meter: meter as i32,
                quantity,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#""event_id":"1","account_id":"acme","member_id":"alice","occurred_at":"2026-05-10T08:00:00Z""#;

    fn with(extra: &str) -> Result<api::Event, Malformed> {
        parse(&format!("{{{BASE},{extra}}}"), "host-1")
    }

    #[test]
    fn every_kind_parses_and_maps_to_its_wire_kind() {
        use api::event::Kind;
        let cases: [(&str, Kind); 5] = [
            (
                r#""kind":"agent_login""#,
                Kind::AgentLogin(api::AgentLogin {}),
            ),
            (
                r#""kind":"agent_logout""#,
                Kind::AgentLogout(api::AgentLogout {}),
            ),
            (
                r#""kind":"queue_login","queue_id":"sales""#,
                Kind::QueueLogin(api::QueueLogin {
                    queue_id: "sales".into(),
                }),
            ),
            (
                r#""kind":"queue_logout","queue_id":"sales""#,
                Kind::QueueLogout(api::QueueLogout {
                    queue_id: "sales".into(),
                }),
            ),
            (
                r#""kind":"metered_usage","meter":"ai_qa_packs","quantity":2"#,
                Kind::MeteredUsage(api::MeteredUsage {
                    meter: api::Meter::AiQaPacks as i32,
                    quantity: 2,
                }),
            ),
        ];
        for (extra, expected) in cases {
            let event = with(extra).unwrap_or_else(|e| panic!("{extra}: {e}"));
            assert_eq!(event.kind, Some(expected), "{extra}");
        }
        let event = with(r#""kind":"agent_login""#).expect("valid");
        assert_eq!(event.source, "host-1", "the default source");
        assert_eq!(event.occurred_at.map(|t| t.seconds), Some(1_778_400_000));
        let named = with(r#""kind":"agent_login","source":"pbx""#).expect("valid");
        assert_eq!(named.source, "pbx");
        let offset = parse(
            r#"{"event_id":"1","account_id":"acme","member_id":"alice","occurred_at":"2026-05-10T10:00:00.5+02:00","kind":"agent_login"}"#,
            "s",
        )
        .expect("an offset and a fraction");
        assert_eq!(
            offset.occurred_at,
            Some(prost_types::Timestamp {
                seconds: 1_778_400_000,
                nanos: 500_000_000
            })
        );
    }

    #[test]
    fn each_problem_is_named() {
        for (extra, expected) in [
            (r#""kind":"queue_login""#, "kind queue_login needs queue_id"),
            (
                r#""kind":"metered_usage","meter":"tokens","quantity":2"#,
                "meter \"tokens\": expected",
            ),
            (
                r#""kind":"metered_usage","meter":"ai_qa_packs""#,
                "needs quantity",
            ),
            (r#""kind":"metered_usage","quantity":2"#, "needs meter"),
            (
                r#""kind":"metered_usage","meter":"ai_qa_packs","quantity":0"#,
                "quantity 0: must be positive",
            ),
            (
                r#""kind":"coffee_break""#,
                "kind \"coffee_break\": expected",
            ),
            (
                r#""kind":"agent_login","quantity":3"#,
                "quantity does not belong to kind agent_login",
            ),
            (
                r#""kind":"queue_logout","queue_id":"q","meter":"ai_qa_packs""#,
                "meter does not belong to kind queue_logout",
            ),
            (r#""kind":"agent_login","source":"a/b""#, "source"),
            (
                r#""kind":"agent_login","colour":"red""#,
                "unknown field `colour`",
            ),
        ] {
            let error = with(extra).expect_err(extra).to_string();
            assert!(error.contains(expected), "{extra}: {error}");
        }
    }

    #[test]
    fn missing_fields_garbage_and_bad_times_are_errors() {
        let error = parse(
            r#"{"account_id":"a","member_id":"m","occurred_at":"2026-05-10T08:00:00Z","kind":"agent_login"}"#,
            "s",
        )
        .expect_err("no event_id")
        .to_string();
        assert!(error.contains("missing field `event_id`"), "{error}");
        let error = parse(
            r#"{"event_id":"","account_id":"a","member_id":"m","occurred_at":"2026-05-10T08:00:00Z","kind":"agent_login"}"#,
            "s",
        )
        .expect_err("empty event_id")
        .to_string();
        assert!(error.contains("event_id"), "{error}");
        assert!(
            parse(r#"{"event_id":"1","acount_id":"x"}"#, "s")
                .expect_err("typo")
                .to_string()
                .contains("acount_id")
        );
        assert!(parse("not json", "s").is_err());
        assert!(parse("[1, 2]", "s").is_err());
        for time in ["yesterday", "2026-05-10T08:00:00", "2026-05-10"] {
            let line = format!(
                r#"{{"event_id":"1","account_id":"a","member_id":"m","occurred_at":"{time}","kind":"agent_login"}}"#
            );
            let error = parse(&line, "s").expect_err(time).to_string();
            assert!(
                error.starts_with(&format!("occurred_at {time:?}")),
                "{error}"
            );
        }
    }
}
