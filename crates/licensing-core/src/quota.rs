//! Quotas of the metered services (SPEC 6): may a service run now, and how much is left this
//! month. Use is counted from metered events; a month's quota starts again with the next month.

use crate::{account::AccountSettings, events::Meter, statement::SPEECH_TO_TEXT_BASE_MINUTES};

/// The answer to a quota check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// Whether `quantity` more may be used now.
    pub allowed: bool,
    /// Used this month.
    pub used: u64,
    /// The month's limit; `None` is unlimited.
    pub limit: Option<u64>,
    /// Left this month; `None` is unlimited.
    pub remaining: Option<u64>,
    /// Why not, when not allowed.
    pub reason: String,
}

/// Whether `quantity` more of `meter` may be used, having used `used` this month.
pub fn check_quota(settings: &AccountSettings, meter: Meter, used: u64, quantity: u64) -> Quota {
    let (enabled, switch, limit) = match meter {
        Meter::SpeechToTextMinutes => (
            settings.speech_to_text,
            "speech_to_text",
            settings
                .speech_to_text_extra_minutes_cap
                .map(|cap| SPEECH_TO_TEXT_BASE_MINUTES + u64::from(cap)),
        ),
        Meter::SmartRoutingPacks => (
            settings.power_pack,
            "power_pack",
            settings.smart_routing_packs_cap.map(u64::from),
        ),
        Meter::AiTopicsPacks => (
            settings.power_pack,
            "power_pack",
            settings.ai_topics_packs_cap.map(u64::from),
        ),
        Meter::AiQaPacks => (
            settings.power_pack,
            "power_pack",
            settings.ai_qa_packs_cap.map(u64::from),
        ),
    };
    let remaining = limit.map(|limit| limit.saturating_sub(used));
    let (allowed, reason) = if !enabled {
        (false, format!("{meter} needs {switch} on for the account"))
    } else {
        match (remaining, limit) {
            (Some(0), Some(limit)) => (
                false,
                format!(
                    "{meter} quota for this month is used up: {used} of {limit} used; it starts again next month"
                ),
            ),
            (Some(left), Some(limit)) if quantity > left => (
                false,
                format!(
                    "{meter} quota for this month is too small for {quantity} more: {used} of {limit} used, {left} left; it starts again next month"
                ),
            ),
            _ => (true, String::new()),
        }
    };
    Quota {
        allowed,
        used,
        limit,
        remaining,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::Zone;

    fn settings() -> AccountSettings {
        let mut s = AccountSettings::new(Zone::utc());
        s.speech_to_text = true;
        s.power_pack = true;
        s
    }

    #[test]
    fn speech_to_text_runs_until_base_and_cap_are_used_up() {
        let mut s = settings();
        s.speech_to_text_extra_minutes_cap = Some(1_000);
        let q = check_quota(&s, Meter::SpeechToTextMinutes, 5_900, 100);
        assert_eq!(
            (q.allowed, q.limit, q.remaining),
            (true, Some(6_000), Some(100))
        );
        let q = check_quota(&s, Meter::SpeechToTextMinutes, 5_900, 101);
        assert!(!q.allowed);
        assert_eq!(
            q.reason,
            "SPEECH_TO_TEXT_MINUTES quota for this month is too small for 101 more: 5900 of 6000 used, 100 left; it starts again next month"
        );
        let q = check_quota(&s, Meter::SpeechToTextMinutes, 6_000, 0);
        assert!(!q.allowed, "nothing left: even a state check says no");
        assert_eq!(
            q.reason,
            "SPEECH_TO_TEXT_MINUTES quota for this month is used up: 6000 of 6000 used; it starts again next month"
        );
        // Without a cap, unlimited.
        s.speech_to_text_extra_minutes_cap = None;
        let q = check_quota(&s, Meter::SpeechToTextMinutes, 1_000_000, 500);
        assert_eq!((q.allowed, q.limit, q.remaining), (true, None, None));
    }

    #[test]
    fn power_pack_services_have_their_own_caps_and_need_the_switch() {
        let mut s = settings();
        s.ai_qa_packs_cap = Some(2);
        let q = check_quota(&s, Meter::AiQaPacks, 0, 5);
        assert_eq!(
            (q.allowed, q.reason.as_str()),
            (
                false,
                "AI_QA_PACKS quota for this month is too small for 5 more: 0 of 2 used, 2 left; it starts again next month"
            ),
            "nothing is used up yet"
        );
        assert!(check_quota(&s, Meter::AiQaPacks, 1, 1).allowed);
        assert!(!check_quota(&s, Meter::AiQaPacks, 2, 1).allowed);
        assert!(
            check_quota(&s, Meter::AiTopicsPacks, 2, 1).allowed,
            "other services keep theirs"
        );
        s.power_pack = false;
        let q = check_quota(&s, Meter::SmartRoutingPacks, 0, 1);
        assert_eq!(
            (q.allowed, q.reason.as_str()),
            (
                false,
                "SMART_ROUTING_PACKS needs power_pack on for the account"
            )
        );
    }
}
