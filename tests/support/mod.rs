//! Shared by the end-to-end tests: the real `licensing` binary as a child process on a free port,
//! and the real `grpcurl` client.
//!
//! grpcurl is installed by `.ci/test` into `.tools/bin` (or named by `GRPCURL_BIN`). When it is
//! missing, the tests fail with instructions: a skipped end-to-end test would hide a regression.

#![allow(dead_code, unreachable_pub)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

/// How long the server may take to start or stop before a test fails (generous: a busy machine).
const DEADLINE: Duration = Duration::from_secs(90);
/// The longest one grpcurl call may take. Generous on purpose: a debug build on a busy 2-core
/// machine reads a large account slowly, and a test must fail for a wrong answer, not a slow one.
const CALL_DEADLINE_SECONDS: &str = "300";

/// A running `licensing` process with its own data folder.
pub struct Licensing {
    child: Child,
    /// The bound address, `127.0.0.1:PORT`.
    pub address: String,
    /// Where health is checked in plaintext: the `--health-listen` address when one is
    /// configured, the main address otherwise.
    pub health_address: String,
    logs: Arc<Mutex<Vec<String>>>,
    /// The database folder.
    pub data_dir: PathBuf,
    _owned_data: Option<tempfile::TempDir>,
}

impl Licensing {
    /// Starts the binary on `127.0.0.1:0` and waits until it reports the bound address and its
    /// health check answers SERVING.
    pub fn start() -> Licensing {
        let data = tempfile::tempdir().expect("temporary data folder");
        let mut server = Licensing::start_at(data.path().join("db"));
        server._owned_data = Some(data);
        server
    }

    /// Starts the binary on `127.0.0.1:0` with its database in `data_dir`, which outlives it (for
    /// restarts), and waits until it is SERVING.
    pub fn start_at(data_dir: PathBuf) -> Licensing {
        Licensing::start_on(data_dir, "127.0.0.1:0")
    }

    /// Starts the binary on `listen` with its database in `data_dir`, and waits until SERVING.
    /// A fixed address lets clients (the collector) find it again after a restart.
    pub fn start_on(data_dir: PathBuf, listen: &str) -> Licensing {
        Licensing::start_with(data_dir, listen, &[])
    }

    /// Starts the binary like [`Licensing::start_on`], with these environment variables set (and
    /// no other `LICENSING_*` of the test's own environment).
    pub fn start_with(data_dir: PathBuf, listen: &str, environment: &[(&str, &str)]) -> Licensing {
        Licensing::launch(
            Command::new(env!("CARGO_BIN_EXE_licensing")),
            data_dir,
            listen,
            &[],
            environment,
        )
    }

    /// Starts the binary on `127.0.0.1:0` with `args` added, with its own data folder, and waits
    /// until SERVING.
    pub fn start_with_args(args: &[&str]) -> Licensing {
        let data = tempfile::tempdir().expect("temporary data folder");
        let command = Command::new(env!("CARGO_BIN_EXE_licensing"));
        let mut server =
            Licensing::launch(command, data.path().join("db"), "127.0.0.1:0", args, &[]);
        server._owned_data = Some(data);
        server
    }

    /// Starts the binary on `127.0.0.1:0` with these environment variables and `args` added,
    /// with its own data folder, and waits until SERVING.
    pub fn start_with_env_args(environment: &[(&str, &str)], args: &[&str]) -> Licensing {
        let data = tempfile::tempdir().expect("temporary data folder");
        let command = Command::new(env!("CARGO_BIN_EXE_licensing"));
        let mut server = Licensing::launch(
            command,
            data.path().join("db"),
            "127.0.0.1:0",
            args,
            environment,
        );
        server._owned_data = Some(data);
        server
    }

    /// Starts the binary on `127.0.0.1:0` with `args` added, its open-files limit (soft and hard)
    /// set to `open_files` by the shell's `ulimit`, and waits until SERVING.
    pub fn start_limited(open_files: u32, args: &[&str]) -> Licensing {
        let data = tempfile::tempdir().expect("temporary data folder");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_licensing"));
        let mut server =
            Licensing::launch(command, data.path().join("db"), "127.0.0.1:0", args, &[]);
        server._owned_data = Some(data);
        server
    }

    fn launch(
        mut command: Command,
        data_dir: PathBuf,
        listen: &str,
        args: &[&str],
        environment: &[(&str, &str)],
    ) -> Licensing {
        // The test's own configuration never leaks in: the process gets what the test says.
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("LICENSING_") || text.starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        command.envs(environment.iter().copied());
        let mut child = command
            .args(["--listen", listen, "--data-dir"])
            .arg(&data_dir)
            .args(["--log", "info"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the licensing binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        {
            let logs = logs.clone();
            // Drains stderr for the whole life of the process so it never blocks on a full pipe.
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("licensing listening")
                        && let Some(address) = field(&line, "address")
                    {
                        let _ = address_tx.send(address);
                    }
                    logs.lock().expect("log lock").push(line);
                }
            });
        }
        let address = match address_rx.recv_timeout(DEADLINE) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "licensing did not report its address; logs:\n{}",
                    logs.lock().expect("log lock").join("\n")
                );
            }
        };
        // Logged before the main address, so it is in the logs by now.
        let health_address = logs
            .lock()
            .expect("log lock")
            .iter()
            .find(|line| line.contains("health checks listening"))
            .and_then(|line| field(line, "address"))
            .unwrap_or_else(|| address.clone());
        let server = Licensing {
            child,
            address,
            health_address,
            logs,
            data_dir,
            _owned_data: None,
        };
        server.wait_until_serving();
        server
    }

    fn wait_until_serving(&self) {
        let started = Instant::now();
        loop {
            let output = self.health();
            if output.status.success()
                && String::from_utf8_lossy(&output.stdout).contains("SERVING")
            {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "licensing at {} never became SERVING: {}",
                self.address,
                String::from_utf8_lossy(&output.stderr)
            );
            // Polling with a deadline, not a fixed wait for readiness.
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Checks health with grpcurl, in plaintext, on [`Licensing::health_address`].
    pub fn health(&self) -> Output {
        Command::new(grpcurl_path())
            .args([
                "-plaintext",
                "-max-time",
                CALL_DEADLINE_SECONDS,
                "-d",
                r#"{"service":""}"#,
            ])
            .arg(&self.health_address)
            .arg("grpc.health.v1.Health/Check")
            .output()
            .expect("run grpcurl")
    }

    /// Runs grpcurl against this server (plaintext) with the given arguments.
    pub fn grpcurl(&self, args: &[&str]) -> Output {
        let mut full = vec!["-plaintext", "-max-time", CALL_DEADLINE_SECONDS];
        let (options, rest): (Vec<&str>, Vec<&str>) = split_target(args);
        full.extend(options);
        full.push(&self.address);
        full.extend(rest);
        Command::new(grpcurl_path())
            .args(&full)
            .output()
            .expect("run grpcurl")
    }

    /// Calls a method with a JSON request and returns the JSON response, failing the test with
    /// grpcurl's error when the call fails.
    pub fn call(&self, method: &str, request: &serde_json::Value) -> serde_json::Value {
        let output = self.grpcurl(&["-d", &request.to_string(), method]);
        assert!(
            output.status.success(),
            "{method} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("grpcurl printed JSON")
    }

    /// Calls a method that must fail, returning grpcurl's error text (code and message).
    pub fn call_err(&self, method: &str, request: &serde_json::Value) -> String {
        let output = self.grpcurl(&["-d", &request.to_string(), method]);
        assert!(
            !output.status.success(),
            "{method} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Sends SIGTERM and waits for the process to exit, returning whether it exited cleanly.
    pub fn terminate(mut self) -> (bool, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success(), "kill -TERM failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for licensing") {
                // Let the drain thread take the last lines.
                let logs = self.wait_for_logs();
                return (status.success(), logs);
            }
            if started.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("licensing did not stop within {DEADLINE:?} of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The `http://` endpoint, for generated gRPC clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A connection for generated gRPC clients, each call bounded by a generous deadline.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.endpoint())
            .expect("endpoint")
            .timeout(Duration::from_secs(120))
            .connect()
            .await
            .expect("connect")
    }

    /// The log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Calls a server-streaming method and returns every response message.
    pub fn call_stream(&self, method: &str, request: &serde_json::Value) -> Vec<serde_json::Value> {
        self.call_stream_with(&[], method, request)
    }

    /// [`Licensing::call_stream`] with grpcurl options before the request (`-H` headers).
    pub fn call_stream_with(
        &self,
        options: &[&str],
        method: &str,
        request: &serde_json::Value,
    ) -> Vec<serde_json::Value> {
        let request = request.to_string();
        let mut args = options.to_vec();
        args.extend(["-d", &request, method]);
        let output = self.grpcurl(&args);
        assert!(
            output.status.success(),
            "{method} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::Deserializer::from_slice(&output.stdout)
            .into_iter::<serde_json::Value>()
            .collect::<Result<_, _>>()
            .expect("grpcurl printed JSON messages")
    }

    fn wait_for_logs(&self) -> Vec<String> {
        let started = Instant::now();
        loop {
            let logs = self.logs.lock().expect("log lock").clone();
            if logs.iter().any(|l| l.contains("stopped"))
                || started.elapsed() > Duration::from_secs(2)
            {
                return logs;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Licensing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines a child process writes to `stream`, collected as they come by a thread (which ends
/// when the stream closes), so that a test can wait for a line with a deadline.
pub fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let lines = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                lines.lock().expect("lock").push(line);
            }
        })
    };
    (lines, reader)
}

/// An RFC 3339 time as the wire's timestamp.
pub fn timestamp(text: &str) -> prost_types::Timestamp {
    let at: jiff::Timestamp = text.parse().expect("timestamp");
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").to_string()
}

/// grpcurl's options go before the address, the method (and anything after it) after.
fn split_target<'a>(args: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut options = Vec::new();
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        options.push(args[i]);
        // Every option these tests use takes a value.
        if let Some(value) = args.get(i + 1) {
            options.push(value);
        }
        i += 2;
    }
    (options, args[i.min(args.len())..].to_vec())
}

/// The grpcurl binary: `GRPCURL_BIN`, else `.tools/bin/grpcurl` as installed by `.ci/test`.
pub fn grpcurl_path() -> PathBuf {
    let path = std::env::var_os("GRPCURL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/grpcurl"));
    assert!(
        path.exists(),
        "grpcurl not found at {}: run ./.ci/test once (it installs the pinned tools into .tools/) or set GRPCURL_BIN",
        path.display()
    );
    path
}

/// The value of `name=value` in a log line (text format).
fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    let value: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    Some(value.trim_matches('"').to_owned())
}

/// xorshift64*: deterministic, so a failure replays from its seed.
pub struct Rng(u64);

impl Rng {
    /// From `seed` (zero, the one state xorshift never leaves, is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
