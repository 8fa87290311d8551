//! Identifiers: one rule per kind, the same wherever an id enters (requests, events, the
//! collector's lines and flags), and stated in the contract's conventions (`types.proto`).
//!
//! | kind | bytes | characters |
//! |---|---|---|
//! | account | 1 to 64 | ASCII letters, digits, `.` `_` `-` `@` `:` |
//! | member | 1 to 128 | ASCII letters, digits, `.` `_` `-` `@` `:` |
//! | skill, queue | 1 to 128 | any UTF-8 but control characters |
//! | event source, event id | 1 to 128 | any UTF-8 but control characters and `/` |
//!
//! Account and member ids become parts of storage keys, so their set is closed and holds no
//! separator byte; no id of any kind may hold a control character, so none can forge a log line
//! or a key separator; sources and event ids are shown joined as `source/event_id`.

/// What an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// An account (tenant).
    Account,
    /// A team member of an account.
    Member,
    /// A member's skill.
    Skill,
    /// A queue agents log in to.
    Queue,
    /// Where events come from.
    Source,
    /// An event, unique within its source.
    Event,
}

impl IdKind {
    /// The longest id of this kind, in bytes.
    pub const fn max_bytes(self) -> usize {
        match self {
            IdKind::Account => 64,
            IdKind::Member | IdKind::Skill | IdKind::Queue | IdKind::Source | IdKind::Event => 128,
        }
    }

    /// Whether `c` may appear in an id of this kind.
    fn allows(self, c: char) -> bool {
        match self {
            IdKind::Account | IdKind::Member => c.is_ascii_alphanumeric() || "._-@:".contains(c),
            IdKind::Skill | IdKind::Queue => !c.is_control(),
            IdKind::Source | IdKind::Event => !c.is_control() && c != '/',
        }
    }

    /// The characters allowed, in words.
    fn characters(self) -> &'static str {
        match self {
            IdKind::Account | IdKind::Member => "may hold only ASCII letters, digits and . _ - @ :",
            IdKind::Skill | IdKind::Queue => "must not contain control characters",
            IdKind::Source | IdKind::Event => "must not contain control characters or '/'",
        }
    }
}

/// An id that breaks its kind's rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value}: {problem}")]
pub struct InvalidId {
    /// The field that held it, e.g. `settings.skills[1].id`.
    pub field: String,
    /// The id, quoted with control characters escaped (or its length, when too long).
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Checks `value`, from the field `field`, against the rule of `kind`.
pub fn check(kind: IdKind, field: &str, value: &str) -> Result<(), InvalidId> {
    let invalid = |value: String, problem: String| InvalidId {
        field: field.to_owned(),
        value,
        problem,
    };
    if value.is_empty() {
        return Err(invalid("\"\"".to_owned(), "must not be empty".to_owned()));
    }
    if value.len() > kind.max_bytes() {
        return Err(invalid(
            format!("({} bytes)", value.len()),
            format!("must be at most {} bytes", kind.max_bytes()),
        ));
    }
    if !value.chars().all(|c| kind.allows(c)) {
        // Debug quoting escapes control characters: the value cannot break a log line.
        return Err(invalid(format!("{value:?}"), kind.characters().to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_rule_and_no_kind_takes_a_control_character() {
        let cases = [
            (IdKind::Account, "acme-eu_1.prod@x:y", None),
            (
                IdKind::Account,
                "a b",
                Some("may hold only ASCII letters, digits and . _ - @ :"),
            ),
            (IdKind::Member, "ann", None),
            (
                IdKind::Member,
                "ann/x",
                Some("may hold only ASCII letters, digits and . _ - @ :"),
            ),
            (IdKind::Skill, "Support (DE) – Tier 2", None),
            (IdKind::Queue, "q/1", None),
            (IdKind::Source, "pbx-1", None),
            (
                IdKind::Source,
                "a/b",
                Some("must not contain control characters or '/'"),
            ),
            (IdKind::Event, "évènement 7", None),
        ];
        for (kind, value, problem) in cases {
            assert_eq!(
                check(kind, "f", value).err().map(|e| e.problem),
                problem.map(str::to_owned),
                "{kind:?} {value:?}"
            );
        }
        for kind in [
            IdKind::Account,
            IdKind::Member,
            IdKind::Skill,
            IdKind::Queue,
            IdKind::Source,
            IdKind::Event,
        ] {
            for forged in [
                "id\nFAKE LOG LINE",
                "a\0b",
                "tab\there",
                "\u{1b}[31mred",
                "del\u{7f}",
            ] {
                let error = check(kind, "f", forged).expect_err(forged);
                assert!(!error.to_string().contains('\n'), "{error}");
            }
            assert_eq!(
                check(kind, "f", "").expect_err("empty").problem,
                "must not be empty"
            );
            let long = "x".repeat(kind.max_bytes() + 1);
            assert_eq!(
                check(kind, "f", &long).expect_err("long").value,
                format!("({} bytes)", kind.max_bytes() + 1)
            );
        }
    }
}
