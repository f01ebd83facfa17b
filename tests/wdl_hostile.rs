//! Hostile workflow files and request bodies. Each gets its clear error at
//! once: never a signal (a stack overflow aborts the process), never a
//! hang, never a node that stops serving.
//!
//! The CLI cases run `symphony validate` (or `run`) as a child process and
//! reap it with `wait4`, which gives that child's peak memory; the HTTP
//! cases send each body to a real node process and then check that the
//! node still answers `/health` and runs a normal workflow.

mod support;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use support::node::{Node, get, post_json, post_text};
use support::{symphony, wait_until};

/// Exit code of `symphony validate` for an invalid workflow.
const EXIT_CONFIG: i32 = 78;
/// What the property test allows one hostile file: time and peak memory.
const DEADLINE: Duration = Duration::from_secs(1);
const MAX_RSS_BYTES: u64 = 256 * 1024 * 1024;
const YAML_TOO_DEEP: &str = "yaml nested more than 64 levels deep";

/// How a child process ended, with its peak resident memory.
#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stderr: String,
    elapsed: Duration,
    max_rss_bytes: u64,
}

impl Outcome {
    /// Asserts the process exited with `code` (not by a signal) and said
    /// `message` on stderr.
    fn assert_refused(&self, code: i32, message: &str) {
        assert_eq!(
            self.status.signal(),
            None,
            "killed by a signal: {}",
            self.stderr
        );
        assert_eq!(self.status.code(), Some(code), "{}", self.stderr);
        assert!(
            self.stderr.contains(message),
            "stderr lacks {message:?}:\n{}",
            self.stderr
        );
    }
}

/// Runs `cmd` and reaps it with `wait4`, so its own peak memory is known
/// (`RUSAGE_CHILDREN` would mix in every other child of the test binary).
/// Kills it and panics when it outlives `limit`.
///
/// Linux carries the high-water mark of the spawning process into the
/// child's `ru_maxrss` (the child starts on the parent's memory until it
/// execs), so the figure is an upper bound of the child's own peak: the
/// tests of this file keep the test process well below the bound.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which std's Child does not see"
)]
fn run_measured(mut cmd: Command, limit: Duration) -> Outcome {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("symphony starts");
    let mut stderr = child.stderr.take().expect("stderr piped");
    // Drained on a thread so a long report cannot block the child.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).ok();
        text
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain old data; an all-zero value is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our child, not yet reaped; both out-pointers
        // point to live locals.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(reaped >= 0, "wait4: {}", std::io::Error::last_os_error());
        if reaped == pid {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no answer within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Outcome {
        status: ExitStatus::from_raw(status),
        stderr: reader.join().expect("stderr reader"),
        elapsed: start.elapsed(),
        // Linux reports `ru_maxrss` in KiB.
        max_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
    }
}

/// `symphony validate FILE` in the file's directory, measured.
fn validate(file: &Path, limit: Duration) -> Outcome {
    let mut cmd = symphony();
    cmd.current_dir(file.parent().expect("a directory"))
        .arg("validate")
        .arg(file.file_name().expect("a file name"));
    run_measured(cmd, limit)
}

/// Writes `text` as `name` in `dir` and validates it: generous time, for
/// the regression cases (the property test holds the 1 s bound).
fn validate_text(dir: &Path, name: &str, text: &str) -> Outcome {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("file written");
    validate(&file, Duration::from_secs(60))
}

/// A workflow whose one task passes `value` (YAML text that starts on the
/// line after `x:`, at the task's `with` indentation) as its input `x`.
fn with_value(value: &str) -> String {
    format!(
        "version: 1\nname: hostile\ntasks:\n  t:\n    uses: builtin/echo\n    with:\n      x:\n{value}\n"
    )
}

/// The ways to nest a value that the YAML scanner knows, each `depth`
/// levels deep. The block styles are indented once per level, so a file
/// within the 8 MiB source limit holds a few thousand of their levels.
#[derive(Debug, Clone, Copy)]
enum Style {
    /// `- - - 1`: compact block sequences.
    CompactSequences,
    /// `? ? ? 1`: compact complex keys.
    CompactKeys,
    /// `- ? - ? 1`: both, alternating.
    CompactMixed,
    /// `[[[ ]]]`: flow sequences.
    FlowSequences,
    /// `{a: {a: 1}}`: flow mappings.
    FlowMappings,
    /// `{"a": {"a": 1}}`: the whole file as JSON.
    Json,
    /// `a:` on lines indented one more space each.
    IndentedMappings,
    /// `-` on lines indented one more space each.
    IndentedSequences,
}

const STYLES: [Style; 8] = [
    Style::CompactSequences,
    Style::CompactKeys,
    Style::CompactMixed,
    Style::FlowSequences,
    Style::FlowMappings,
    Style::Json,
    Style::IndentedMappings,
    Style::IndentedSequences,
];

impl Style {
    /// The deepest nesting of this style that fits the source limit.
    fn max_depth(self) -> usize {
        match self {
            Style::IndentedMappings | Style::IndentedSequences => 3_000,
            _ => 1_000_000,
        }
    }

    /// A workflow file nested `depth` levels deep in this style.
    fn file(self, depth: usize) -> String {
        let indented = |item: &str| -> String {
            (0..depth)
                .map(|i| format!("{}{item}\n", " ".repeat(8 + i)))
                .collect()
        };
        match self {
            Style::CompactSequences => with_value(&format!("      {}1", "- ".repeat(depth))),
            Style::CompactKeys => with_value(&format!("        {}1", "? ".repeat(depth))),
            Style::CompactMixed => with_value(&format!("        {}1", "- ? ".repeat(depth / 2))),
            Style::FlowSequences => {
                with_value(&format!("        {}{}", "[".repeat(depth), "]".repeat(depth)))
            }
            Style::FlowMappings => with_value(&format!(
                "        {}1{}",
                "{a: ".repeat(depth),
                "}".repeat(depth)
            )),
            Style::Json => [
                r#"{"version": 1, "name": "hostile", "tasks": {"t": {"uses": "builtin/echo", "with": {"x": "#,
                &r#"{"a": "#.repeat(depth),
                "1",
                &"}".repeat(depth),
                "}}}}",
            ]
            .concat(),
            Style::IndentedMappings => with_value(&indented("a:")),
            Style::IndentedSequences => with_value(&indented("-")),
        }
    }
}

/// Every style at its deepest is refused with the depth diagnostic, at a
/// position, with exit 78.
#[test]
fn every_nesting_style_is_refused_at_its_deepest() {
    let dir = tempfile::tempdir().unwrap();
    for style in STYLES {
        let text = style.file(style.max_depth());
        let out = validate_text(dir.path(), "deep.yaml", &text);
        out.assert_refused(EXIT_CONFIG, YAML_TOO_DEEP);
        assert!(
            out.stderr.starts_with("deep.yaml:"),
            "{style:?}: no position:\n{}",
            out.stderr
        );
    }
}

/// The report of the issue: 20,000 levels of indented mappings. Indented
/// one space per level that is 200 MB of text, past the source limit, so
/// it is refused before it is read. The file is written a line at a time:
/// the test process stays small, as the memory bound of the property test
/// needs (see [`run_measured`]).
#[test]
fn twenty_thousand_indented_levels_are_refused_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deep.yaml");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    out.write_all(with_value("").trim_end().as_bytes()).unwrap();
    out.write_all(b"\n").unwrap();
    for i in 0..20_000 {
        writeln!(out, "{}a:", " ".repeat(8 + i)).unwrap();
    }
    out.into_inner().unwrap().sync_all().unwrap();
    validate(&file, Duration::from_secs(60))
        .assert_refused(EXIT_CONFIG, "is larger than 8388608 bytes");
}

#[test]
fn expressions_extends_and_imports_have_depth_limits() {
    let dir = tempfile::tempdir().unwrap();
    let deep = 100_000;

    let parens = with_value(&format!(
        "        \"${{{{ {}1{} }}}}\"",
        "(".repeat(deep),
        ")".repeat(deep)
    ));
    validate_text(dir.path(), "parens.yaml", &parens)
        .assert_refused(EXIT_CONFIG, "expression nested more than 64 levels deep");
    let negations = with_value(&format!("        \"${{{{ {}true }}}}\"", "!".repeat(deep)));
    validate_text(dir.path(), "not.yaml", &negations)
        .assert_refused(EXIT_CONFIG, "expression nested more than 64 levels deep");

    let mut templates = String::from("  t0: {uses: builtin/noop}\n");
    for i in 1..100 {
        templates.push_str(&format!("  t{i}: {{extends: t{}}}\n", i - 1));
    }
    let extends =
        format!("version: 1\nname: x\ntemplates:\n{templates}tasks:\n  a: {{extends: t99}}\n");
    validate_text(dir.path(), "extends.yaml", &extends)
        .assert_refused(EXIT_CONFIG, "extends chains more than 32 templates");

    for i in 0..40 {
        let next = i + 1;
        std::fs::write(
            dir.path().join(format!("lib{i}.yaml")),
            format!("import: [lib{next}.yaml]\n"),
        )
        .unwrap();
    }
    let imports = "version: 1\nname: x\nimport: [lib0.yaml]\ntasks:\n  a: {uses: builtin/noop}\n";
    validate_text(dir.path(), "imports.yaml", imports)
        .assert_refused(EXIT_CONFIG, "imports nested more than 32 files deep");
}

/// A file that is not a regular file, or too long, is a diagnostic at the
/// line of the import that names it, at once.
#[test]
fn imports_of_endless_special_or_oversized_files_are_refused_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.yaml");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(dir.path().join("folder.yaml")).unwrap();
    let big = std::fs::File::create(dir.path().join("big.yaml")).unwrap();
    big.set_len(9 * 1024 * 1024).unwrap();

    let cases = [
        (
            "/dev/zero",
            "it is a device or other special file, not a regular file",
        ),
        ("pipe.yaml", "it is a FIFO, not a regular file"),
        ("folder.yaml", "it is a directory, not a regular file"),
        ("big.yaml", "it is larger than"),
    ];
    for (import, reason) in cases {
        let text = format!(
            "version: 1\nname: x\nimport:\n  - {import}\ntasks:\n  a: {{uses: builtin/noop}}\n"
        );
        let out = validate_text(dir.path(), "main.yaml", &text);
        out.assert_refused(
            EXIT_CONFIG,
            &format!("main.yaml:4:5: error: cannot read imported file \"{import}\": {reason}"),
        );
    }
    // The same for the main file itself.
    let out = validate(&fifo, Duration::from_secs(60));
    out.assert_refused(EXIT_CONFIG, "it is a FIFO, not a regular file");
}

/// One long cycle of `needs` is refused with a message that names a few
/// of its tasks and counts the rest. 150,000 tasks is what fits the 8 MiB
/// source limit in this layout.
#[test]
fn a_long_cycle_is_reported_in_a_short_message() {
    let n = 150_000;
    let name = |i: usize| format!("t{i}");
    let mut text = String::from("version: 1\nname: ring\ntasks:\n");
    for i in 0..n {
        let prev = (i + n - 1) % n;
        text.push_str(&format!(
            "  {}: {{uses: builtin/noop, needs: [{}]}}\n",
            name(i),
            name(prev)
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = validate_text(dir.path(), "ring.yaml", &text);
    out.assert_refused(EXIT_CONFIG, "needs form a cycle: ");
    assert!(
        out.stderr.contains(&format!("({} more)", n - 8)),
        "{}",
        out.stderr
    );
    assert!(out.stderr.len() < 1_000, "{}", out.stderr);
}

/// Inputs nested past the value limit, from a file or a flag, are refused
/// before the run starts.
#[test]
fn deep_inputs_are_refused_before_a_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wf.yaml"),
        "version: 1\nname: x\ninputs:\n  x: {type: any}\ntasks:\n  a: {uses: builtin/echo, with: {x: \"${{ inputs.x }}\"}}\n",
    )
    .unwrap();
    let deep = 1_000_000;
    std::fs::write(
        dir.path().join("in.json"),
        format!("{{\"x\": {}{}}}", "[".repeat(deep), "]".repeat(deep)),
    )
    .unwrap();
    let mut cmd = symphony();
    cmd.current_dir(dir.path())
        .args(["run", "wf.yaml", "--inputs", "in.json"]);
    let out = run_measured(cmd, Duration::from_secs(60));
    assert_eq!(out.status.signal(), None, "{}", out.stderr);
    assert_ne!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("value nested more than 64 levels deep"),
        "{}",
        out.stderr
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Any style, any depth past the limit up to a million levels: a
    /// diagnostic within 1 s and 256 MB, never a signal.
    #[test]
    fn nesting_past_the_limit_gets_a_diagnostic_within_bounds(
        style in proptest::sample::select(STYLES.to_vec()),
        depth in 65usize..=1_000_000,
    ) {
        let depth = 65 + (depth - 65) % (style.max_depth() - 64);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deep.yaml");
        std::fs::write(&file, style.file(depth)).unwrap();
        let out = validate(&file, Duration::from_secs(30));
        out.assert_refused(EXIT_CONFIG, YAML_TOO_DEEP);
        prop_assert!(
            out.elapsed <= DEADLINE,
            "{style:?} at {depth} levels took {:?}",
            out.elapsed
        );
        prop_assert!(
            out.max_rss_bytes <= MAX_RSS_BYTES,
            "{style:?} at {depth} levels used {} MB",
            out.max_rss_bytes >> 20
        );
    }
}

/// What a normal run looks like after the hostile ones.
const NORMAL: &str =
    "version: 1\nname: ok\ntasks:\n  a: {uses: builtin/echo, with: {message: hi}}\n";

/// Every hostile body, sent to one node: each gets its 4xx answer, and
/// then the node still answers `/health` and runs a normal workflow.
#[test]
fn a_node_survives_every_hostile_body_and_keeps_serving() {
    let node = Node::healthy("hostile", "");
    let deep = 100_000;
    let workflow = |text: &str| serde_json::json!({ "workflow": text }).to_string();

    let mut bodies: Vec<(&str, String, String, u16, &str)> = STYLES
        .iter()
        .filter(|s| !matches!(s, Style::IndentedMappings | Style::IndentedSequences))
        .map(|s| {
            (
                "workflow nested in one style",
                "/api/v1/runs".to_string(),
                workflow(&s.file(deep)),
                422,
                YAML_TOO_DEEP,
            )
        })
        .collect();
    bodies.push((
        "workflow of indented mappings",
        "/api/v1/runs".into(),
        workflow(&Style::IndentedMappings.file(2_000)),
        422,
        YAML_TOO_DEEP,
    ));
    bodies.push((
        "deep expression",
        "/api/v1/runs".into(),
        workflow(&with_value(&format!(
            "        \"${{{{ {}1{} }}}}\"",
            "(".repeat(deep),
            ")".repeat(deep)
        ))),
        422,
        "expression nested more than 64 levels deep",
    ));
    let brackets = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    bodies.push((
        "body nested a million levels",
        "/api/v1/runs".into(),
        format!("{{\"workflow\": {}}}", brackets(1_000_000)),
        400,
        "invalid request body",
    ));
    for levels in [100, deep] {
        bodies.push((
            "deep inputs",
            "/api/v1/runs".into(),
            format!(
                "{{\"workflow\": {}, \"inputs\": {{\"x\": {}}}}}",
                serde_json::Value::from(NORMAL),
                brackets(levels)
            ),
            400,
            "invalid request body",
        ));
        bodies.push((
            "deep invocation payload",
            "/api/v1/pipelines/any/invoke".into(),
            format!("{{\"x\": {}}}", brackets(levels)),
            400,
            "the inputs must be a JSON object",
        ));
    }
    for (what, path, body, code, message) in &bodies {
        let (got, answer) = post_text(&node.url, path, body)
            .unwrap_or_else(|| panic!("{what}: no answer:\n{}", node.log()));
        assert_eq!(got, *code, "{what}: {answer}");
        assert!(answer.contains(message), "{what}: {answer}");
        let (health, _) = get(&node.url, "/health")
            .unwrap_or_else(|| panic!("{what}: the node stopped answering:\n{}", node.log()));
        assert_eq!(health, 200, "{what}");
    }

    let (code, answer) = post_json(
        &node.url,
        "/api/v1/runs",
        &serde_json::json!({ "workflow": NORMAL }),
    )
    .expect("an answer");
    assert_eq!(code, 201, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let id = answer["run_id"].as_str().unwrap().to_owned();
    wait_until("the normal run succeeds", Duration::from_secs(30), || {
        get(&node.url, &format!("/api/v1/runs/{id}")).is_some_and(|(_, body)| {
            serde_json::from_str::<serde_json::Value>(&body)
                .is_ok_and(|v| v["status"] == "succeeded")
        })
    });
}
