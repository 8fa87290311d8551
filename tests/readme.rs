//! The README's walk-throughs, run verbatim and in order against a fresh service: every `$`
//! command of every `console` block, its output compared with what the README shows.
//!
//! The README compacts long outputs: `...` (optionally with a remark up to the next `...` on the
//! same line, like `... the other products, all zero ...`) stands for anything, and a string
//! `"..."` for any one string. Times read off the real clock (they have fractions of a second,
//! like `2026-11-22T22:25:51.864250338Z`) stand for any time; a sandbox's times are compared
//! exactly. The service's address, the collector's metrics port and its spool folder are
//! replaced by the test's own; `cargo run ... --bin licensing-collector --` by the collector
//! binary, which runs in the background as it would in a second terminal. A command that only
//! reads (`Get*`, `Read*`, `Check*`, `List*`, `curl`) is repeated until its output matches or a
//! deadline passes, so that what the collector is still uploading can arrive.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use support::Licensing;

/// How long a read may take to show what the README shows.
const SETTLE: Duration = Duration::from_secs(90);

/// One `$` command of a console block and the output shown after it.
#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    output: String,
}

/// Whether `text` is a complete shell command: quotes closed, no trailing backslash.
fn complete(text: &str) -> bool {
    let mut single = false;
    let mut double = false;
    let mut escaped = false;
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if !single => escaped = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ => {}
        }
    }
    !single && !double && !text.trim_end().ends_with('\\')
}

/// Every step of every `console` block, in order.
fn steps(readme: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut command: Option<(usize, String)> = None;
    for (number, line) in readme.lines().enumerate() {
        let number = number + 1;
        if !in_console {
            in_console = line.trim_start() == "```console";
            continue;
        }
        if line.trim_start() == "```" {
            in_console = false;
            continue;
        }
        if let Some((start, text)) = command.take() {
            let text = format!("{text}\n{line}");
            if complete(&text) {
                steps.push(Step {
                    line: start,
                    command: text,
                    output: String::new(),
                });
            } else {
                command = Some((start, text));
            }
            continue;
        }
        if let Some(text) = line.strip_prefix("$ ") {
            if complete(text) {
                steps.push(Step {
                    line: number,
                    command: text.to_owned(),
                    output: String::new(),
                });
            } else {
                command = Some((number, text.to_owned()));
            }
        } else if let Some(step) = steps.last_mut() {
            step.output.push_str(line);
            step.output.push('\n');
        }
    }
    steps
}

/// A piece of output: what the comparison sees.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A JSON string (its contents).
    Text(String),
    /// Anything else that is not white space: a number, a word, a bracket, a colon, a comma.
    Other(String),
    /// `...`: any run of tokens.
    Any,
}

fn tokens(text: &str, expected: bool) -> Vec<Token> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        if expected {
            // `... a remark ...` is one wildcard.
            while let Some(start) = rest.find("...") {
                let after = &rest[start + 3..];
                if let Some(end) = after.find("...")
                    && !after[..end].contains(['"', '{', '}', '[', ']'])
                    && !after[..end].trim().is_empty()
                {
                    out.extend(plain_tokens(&rest[..start]));
                    out.push(Token::Any);
                    rest = &after[end + 3..];
                } else {
                    break;
                }
            }
        }
        out.extend(plain_tokens(rest));
    }
    out
}

fn plain_tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '"' => {
                let mut value = String::new();
                let mut escaped = false;
                for (_, c) in chars.by_ref() {
                    match c {
                        _ if escaped => {
                            value.push('\\');
                            value.push(c);
                            escaped = false;
                        }
                        '\\' => escaped = true,
                        '"' => break,
                        c => value.push(c),
                    }
                }
                out.push(Token::Text(value));
            }
            '{' | '}' | '[' | ']' | ':' | ',' => out.push(Token::Other(c.to_string())),
            '.' if text[i..].starts_with("...") => {
                chars.next();
                chars.next();
                out.push(Token::Any);
            }
            _ => {
                let mut word = c.to_string();
                while let Some(&(_, next)) = chars.peek() {
                    if next.is_whitespace() || "{}[]:,\"".contains(next) {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                out.push(Token::Other(word));
            }
        }
    }
    out
}

/// A time read off the real clock: it has a fraction of a second.
fn real_time(text: &str) -> bool {
    text.len() > 20
        && text.ends_with('Z')
        && text.as_bytes().get(10) == Some(&b'T')
        && text.contains('.')
        && text.parse::<jiff::Timestamp>().is_ok()
}

fn same(expected: &Token, actual: &Token) -> bool {
    match (expected, actual) {
        (Token::Text(e), Token::Text(_)) if e == "..." => true,
        (Token::Text(e), Token::Text(a)) if real_time(e) => a.parse::<jiff::Timestamp>().is_ok(),
        (e, a) => e == a,
    }
}

/// Whether `actual` matches `expected`, `Any` matching any run: the classic wildcard match.
fn matches(expected: &[Token], actual: &[Token]) -> bool {
    let (mut e, mut a) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while a < actual.len() {
        if e < expected.len() && expected[e] == Token::Any {
            resume = Some((e, a));
            e += 1;
        } else if e < expected.len() && same(&expected[e], &actual[a]) {
            e += 1;
            a += 1;
        } else if let Some((star, taken)) = resume {
            e = star + 1;
            a = taken + 1;
            resume = Some((star, taken + 1));
        } else {
            return false;
        }
    }
    expected[e..].iter().all(|t| *t == Token::Any)
}

/// Runs the README's commands with the test's addresses and binaries.
struct Runner {
    root: PathBuf,
    replacements: Vec<(String, String)>,
    path: String,
    background: Vec<Child>,
}

impl Runner {
    fn command(&self, text: &str) -> String {
        self.replacements
            .iter()
            .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
    }

    /// Runs a step; returns what went wrong, if anything.
    fn run(&mut self, step: &Step) -> Option<String> {
        let command = self.command(&step.command);
        // The collector, and any command ending in `&`, run in the background, as in a second
        // terminal.
        let background = step.command.trim_end().strip_suffix('&');
        if step.command.contains("--bin licensing-collector") || background.is_some() {
            let command = match background {
                Some(text) => self.command(text),
                None => command,
            };
            let child = Command::new("bash")
                .args(["-c", &format!("exec {command}")])
                .current_dir(&self.root)
                .env("PATH", &self.path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start a background command");
            self.background.push(child);
            return None;
        }
        let expected = tokens(&step.output, true);
        let fails = step.output.trim_start().starts_with("ERROR:");
        let reads = step.command.starts_with("curl ")
            || ["/Get", "/Read", "/Check", "/List"]
                .iter()
                .any(|r| step.command.contains(r));
        let started = Instant::now();
        loop {
            let output = Command::new("bash")
                .args(["-c", &command])
                .current_dir(&self.root)
                .env("PATH", &self.path)
                .output()
                .expect("run bash");
            let shown = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            let status_ok = output.status.success() != fails;
            let output_ok =
                step.output.trim().is_empty() || matches(&expected, &tokens(&shown, false));
            if status_ok && output_ok {
                return None;
            }
            if !reads || started.elapsed() > SETTLE {
                return Some(format!(
                    "README.md line {}: the command\n{}\nexited {} and printed\n{shown}\nbut the README shows\n{}",
                    step.line, step.command, output.status, step.output
                ));
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        for child in &mut self.background {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn the_readme_walk_throughs_run_verbatim_on_a_fresh_service() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let steps = steps(&readme);
    assert!(steps.len() > 20, "only {} commands found", steps.len());
    let server = Licensing::start();
    let scratch = tempfile::tempdir().expect("scratch folder");
    let grpcurl = support::grpcurl_path();
    let tools = grpcurl.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut runner = Runner {
        root,
        replacements: vec![
            ("127.0.0.1:50051".into(), server.address.clone()),
            ("127.0.0.1:9464".into(), support::free_address()),
            ("127.0.0.1:50052".into(), support::free_address()),
            (
                "./secured/".into(),
                format!("{}/", scratch.path().join("secured").display()),
            ),
            (
                "mkdir -p secured".into(),
                format!("mkdir -p {}", scratch.path().join("secured").display()),
            ),
            (
                "./collector-spool".into(),
                scratch.path().join("spool").display().to_string(),
            ),
            (
                "cargo run --release --locked --bin licensing-collector --".into(),
                env!("CARGO_BIN_EXE_licensing-collector").into(),
            ),
            (
                "cargo run --release --locked --bin licensing --".into(),
                env!("CARGO_BIN_EXE_licensing").into(),
            ),
        ],
        path: format!(
            "{}:{}",
            tools.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
        background: Vec::new(),
    };
    // Every step runs, so that one report lists every difference.
    let failures: Vec<String> = steps.iter().filter_map(|step| runner.run(step)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} README commands did not run as shown:\n\n{}",
        failures.len(),
        steps.len(),
        failures.join("\n\n")
    );
    eprintln!("readme: {} commands ran as shown", steps.len());
}

#[test]
fn the_comparison_honours_wildcards_and_nothing_else() {
    let expected = tokens(
        "{ \"a\": 1, ... }\n{ \"items\": [ ... the rest, all zero ... ], \"when\": \"2026-11-22T22:25:51.864250338Z\", \"m\": \"...\" }",
        true,
    );
    let actual = tokens(
        "{\n  \"a\": 1,\n  \"b\": [2]\n}\n{\"items\": [{\"x\": 0}], \"when\": \"2026-12-01T08:00:00.5Z\", \"m\": \"2026-12\"}",
        false,
    );
    assert!(matches(&expected, &actual));
    let wrong = tokens("{ \"a\": 2, \"b\": [2] }", false);
    assert!(!matches(&tokens("{ \"a\": 1, ... }", true), &wrong));
    // A sandbox's time (no fraction) is compared exactly.
    assert!(!matches(
        &tokens("\"2026-10-30T09:00:00Z\"", true),
        &tokens("\"2026-10-30T09:00:01Z\"", false)
    ));
    assert!(complete("grpcurl -d '{\"a\": 1}' x"));
    assert!(!complete("grpcurl -d '{"));
    assert!(!complete("grpcurl \\"));
}
