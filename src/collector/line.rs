//! The event line format (see `docs/events.md`): one JSON object per line, mapped to the wire
//! `Event`. Unknown fields are refused, so that a typo is an error rather than a silent default.

use serde::Deserialize;

use crate::api;

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

/// Parses one line into an event, using `default_source` when the line names none.
pub fn parse(text: &str, default_source: &str) -> Result<api::Event, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let at: jiff::Timestamp = line
        .occurred_at
        .parse()
        .map_err(|e| format!("occurred_at {:?}: {e}", line.occurred_at))?;
    let queue = |kind: &str| {
        line.queue_id
            .clone()
            .ok_or_else(|| format!("kind {kind} needs queue_id"))
    };
    use api::event::Kind;
    let kind = match line.kind.as_str() {
        "agent_login" => Kind::AgentLogin(api::AgentLogin {}),
        "agent_logout" => Kind::AgentLogout(api::AgentLogout {}),
        "queue_login" => Kind::QueueLogin(api::QueueLogin {
            queue_id: queue("queue_login")?,
        }),
        "queue_logout" => Kind::QueueLogout(api::QueueLogout {
            queue_id: queue("queue_logout")?,
        }),
        "metered_usage" => {
            let meter = match line.meter.as_deref() {
                Some("speech_to_text_minutes") => api::Meter::SpeechToTextMinutes,
                Some("smart_routing_packs") => api::Meter::SmartRoutingPacks,
                Some("ai_topics_packs") => api::Meter::AiTopicsPacks,
                Some("ai_qa_packs") => api::Meter::AiQaPacks,
                other => {
                    return Err(format!(
                        "meter {other:?}: expected speech_to_text_minutes, smart_routing_packs, ai_topics_packs or ai_qa_packs"
                    ));
                }
            };
            let quantity = line.quantity.ok_or("kind metered_usage needs quantity")?;
            Kind::MeteredUsage(api::MeteredUsage {
                meter: meter as i32,
                quantity,
            })
        }
        other => {
            return Err(format!(
                "kind {other:?}: expected agent_login, agent_logout, queue_login, queue_logout or metered_usage"
            ));
        }
    };
    Ok(api::Event {
        source: line.source.unwrap_or_else(|| default_source.to_owned()),
        event_id: line.event_id,
        account_id: line.account_id,
        member_id: line.member_id,
        occurred_at: Some(prost_types::Timestamp {
            seconds: at.as_second(),
            nanos: at.subsec_nanosecond(),
        }),
        kind: Some(kind),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses() {
        let base = r#""event_id":"1","account_id":"acme","member_id":"alice","occurred_at":"2026-05-10T08:00:00Z""#;
        for (extra, ok) in [
            (r#""kind":"agent_login""#, true),
            (r#""kind":"agent_logout""#, true),
            (r#""kind":"queue_login","queue_id":"sales""#, true),
            (r#""kind":"queue_logout","queue_id":"sales""#, true),
            (
                r#""kind":"metered_usage","meter":"ai_qa_packs","quantity":2"#,
                true,
            ),
            (r#""kind":"queue_login""#, false),
            (
                r#""kind":"metered_usage","meter":"tokens","quantity":2"#,
                false,
            ),
            (r#""kind":"coffee_break""#, false),
        ] {
            let result = parse(&format!("{{{base},{extra}}}"), "host-1");
            assert_eq!(result.is_ok(), ok, "{extra}: {result:?}");
        }
        let event =
            parse(&format!("{{{base},\"kind\":\"agent_login\"}}"), "host-1").expect("valid");
        assert_eq!(event.source, "host-1");
        assert_eq!(event.occurred_at.map(|t| t.seconds), Some(1_778_400_000));
    }

    #[test]
    fn typos_and_garbage_are_errors() {
        assert!(
            parse(r#"{"event_id":"1","acount_id":"x"}"#, "s")
                .expect_err("typo")
                .contains("acount_id")
        );
        assert!(parse("not json", "s").is_err());
        let bad_time = r#"{"event_id":"1","account_id":"a","member_id":"m","occurred_at":"yesterday","kind":"agent_login"}"#;
        assert!(
            parse(bad_time, "s")
                .expect_err("time")
                .starts_with("occurred_at \"yesterday\"")
        );
    }
}
