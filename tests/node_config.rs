//! Node configuration: defaults < file < environment < flags, one validation
//! that lists every problem, secrets read from files, and every file in
//! `config/` loading as it is.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{repo, run_in};
use symphony::node::config::{NodeArgs, NodeConfig};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn load(args: &NodeArgs, env: &[(&str, &str)]) -> Result<NodeConfig, Vec<String>> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    NodeConfig::load_with_env(args, |k| env.get(k).cloned()).map_err(|e| e.problems().to_vec())
}

fn with_file(path: &Path) -> NodeArgs {
    NodeArgs {
        config: Some(path.to_owned()),
        ..NodeArgs::default()
    }
}

#[test]
fn defaults_need_no_file_and_stay_on_loopback() {
    let c = load(&NodeArgs::default(), &[]).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:7400");
    assert_eq!(c.http.to_string(), "127.0.0.1:8080");
    assert_eq!(c.slots, 256);
    assert_eq!(c.data_dir, PathBuf::from(".symphony"));
    assert_eq!(c.heartbeat.interval, Duration::from_millis(200));
    assert_eq!(c.heartbeat.suspect_after, Duration::from_millis(800));
    assert_eq!(c.heartbeat.down_after, Duration::from_millis(1500));
    assert!(c.seeds.is_empty() && c.cookie().is_none() && c.api_token().is_none());
    assert_eq!(c.exec_allow, None);
    assert!(!c.name.is_empty());
    assert_eq!(c.cluster_addr(), "127.0.0.1:7400");
}

#[test]
fn flags_beat_environment_beat_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "node.yaml",
        r#"
name: from-file
slots: 10
listen: 127.0.0.1:7501
http: 127.0.0.1:8501
labels: { zone: a, gpu: "true" }
heartbeat: { interval: 100ms, suspect_after: 2s, down_after: 5s }
data_dir: /var/lib/file
"#,
    );
    let env = [
        ("SYMPHONY_SLOTS", "20"),
        ("SYMPHONY_NODE_NAME", "from-env"),
        ("SYMPHONY_LABELS", "zone=b, rack=r1"),
        ("SYMPHONY_SUSPECT_AFTER", "1s"),
        ("SYMPHONY_HTTP", "127.0.0.1:8502"),
    ];
    let args = NodeArgs {
        slots: Some("30".into()),
        suspect_after: Some("500ms".into()),
        ..with_file(&file)
    };

    // File only.
    let c = load(&with_file(&file), &[]).unwrap();
    assert_eq!((c.name.as_str(), c.slots), ("from-file", 10));
    assert_eq!(c.labels.get("gpu").map(String::as_str), Some("true"));
    assert_eq!(c.heartbeat.suspect_after, Duration::from_secs(2));
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/file"));

    // The environment overrides the file, option by option; a map is
    // replaced as a whole.
    let c = load(&with_file(&file), &env).unwrap();
    assert_eq!((c.name.as_str(), c.slots), ("from-env", 20));
    assert_eq!(c.http.to_string(), "127.0.0.1:8502");
    assert_eq!(c.listen.to_string(), "127.0.0.1:7501", "kept from the file");
    assert_eq!(
        c.labels.into_iter().collect::<Vec<_>>(),
        vec![("rack".into(), "r1".into()), ("zone".into(), "b".into())]
    );
    assert_eq!(c.heartbeat.suspect_after, Duration::from_secs(1));
    assert_eq!(c.heartbeat.interval, Duration::from_millis(100));

    // Flags override both.
    let c = load(&args, &env).unwrap();
    assert_eq!((c.name.as_str(), c.slots), ("from-env", 30));
    assert_eq!(c.heartbeat.suspect_after, Duration::from_millis(500));
}

#[test]
fn every_option_has_an_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let cookie = write(dir.path(), "cookie", "c00kie\n");
    let token = write(dir.path(), "token", "  t0ken  \n");
    let env = [
        ("SYMPHONY_NODE_NAME", "n1"),
        ("SYMPHONY_LISTEN", "0.0.0.0:7600"),
        ("SYMPHONY_ADVERTISE", "n1.internal"),
        ("SYMPHONY_SEEDS", "a:7400, b:7400,"),
        ("SYMPHONY_COOKIE_FILE", cookie.to_str().unwrap()),
        ("SYMPHONY_LABELS", "gpu=true"),
        ("SYMPHONY_SLOTS", "8"),
        ("SYMPHONY_DATA_DIR", "/data"),
        ("SYMPHONY_HTTP", "0.0.0.0:8600"),
        ("SYMPHONY_API_TOKEN_FILE", token.to_str().unwrap()),
        ("SYMPHONY_HEARTBEAT_INTERVAL", "100ms"),
        ("SYMPHONY_SUSPECT_AFTER", "400ms"),
        ("SYMPHONY_DOWN_AFTER", "900ms"),
        ("SYMPHONY_EXEC_ALLOW", "python3, jq"),
    ];
    let c = load(&NodeArgs::default(), &env).unwrap();
    assert_eq!(c.name, "n1");
    assert_eq!(c.listen.to_string(), "0.0.0.0:7600");
    assert_eq!(c.cluster_addr(), "n1.internal:7600");
    assert_eq!(c.seeds, vec!["a:7400", "b:7400"]);
    assert_eq!(c.cookie().as_deref(), Some("c00kie"));
    assert_eq!(c.api_token().as_deref(), Some("t0ken"));
    assert_eq!(c.labels.get("gpu").map(String::as_str), Some("true"));
    assert_eq!(c.slots, 8);
    assert_eq!(c.data_dir, PathBuf::from("/data"));
    assert_eq!(c.http.to_string(), "0.0.0.0:8600");
    assert_eq!(c.heartbeat.down_after, Duration::from_millis(900));
    assert_eq!(
        c.exec_allow,
        Some(vec!["python3".to_string(), "jq".to_string()])
    );

    // Set but empty: no command may run.
    let c = load(&NodeArgs::default(), &[("SYMPHONY_EXEC_ALLOW", "")]).unwrap();
    assert_eq!(c.exec_allow, Some(vec![]));
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bad.yaml",
        r#"
name: "has space"
listen: 0.0.0.0:7400
sedes: [a:1]
slots: many
seeds: [node1, "node2:7400"]
http: 0.0.0.0:8080
heartbeat:
  interval: 2s
  intervall: 1s
  suspect_after: 1s
  down_after: 500ms
"#,
    );
    let env = [("SYMPHONY_LISTEN", "nowhere")];
    let args = NodeArgs {
        down_after: Some("soon".into()),
        labels: vec!["novalue".into()],
        ..with_file(&file)
    };
    let problems = load(&args, &env).unwrap_err();
    let all = problems.join("\n");
    let expect = [
        "unknown key \"sedes\"; did you mean \"seeds\"?",
        "unknown key \"heartbeat.intervall\"; did you mean \"heartbeat.interval\"?",
        "slots: expected a whole number, found many",
        "SYMPHONY_LISTEN: \"nowhere\" is not an address",
        "--down-after: \"soon\" is not a duration",
        "--label: \"novalue\" is not a label",
        "name: \"has space\" must not contain spaces",
        "seeds: \"node1\" is not HOST:PORT",
        "cookie: a cluster cookie is required",
        "api_token: an API token is required because http is 0.0.0.0:8080",
        "heartbeat.interval (2s) must be shorter than heartbeat.suspect_after (1s)",
        "heartbeat.suspect_after (1s) must be shorter than heartbeat.down_after (500ms)",
    ];
    for e in expect {
        assert!(all.contains(e), "missing {e:?} in:\n{all}");
    }
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(&file.display().to_string())),
        "file problems name the file:\n{all}"
    );
}

#[test]
fn cookie_and_token_rules() {
    let reachable = |extra: NodeArgs| {
        load(
            &NodeArgs {
                listen: Some("0.0.0.0:7400".into()),
                ..extra
            },
            &[],
        )
    };
    // A node other machines can reach needs a cookie.
    assert!(reachable(NodeArgs::default()).is_err());
    assert!(
        reachable(NodeArgs {
            cookie: Some("c".into()),
            ..NodeArgs::default()
        })
        .is_ok()
    );
    // A node that joins seeds needs one, even on loopback.
    let problems = load(
        &NodeArgs {
            seeds: vec!["127.0.0.1:7401".into()],
            ..NodeArgs::default()
        },
        &[],
    )
    .unwrap_err();
    assert!(problems[0].contains("the node joins seeds"), "{problems:?}");
    // An API other machines can reach needs a token; loopback does not.
    let problems = load(
        &NodeArgs {
            http: Some("0.0.0.0:8080".into()),
            ..NodeArgs::default()
        },
        &[],
    )
    .unwrap_err();
    assert!(problems[0].starts_with("api_token:"), "{problems:?}");
    let c = load(
        &NodeArgs {
            http: Some("0.0.0.0:8080".into()),
            api_token: Some("t".into()),
            ..NodeArgs::default()
        },
        &[],
    )
    .unwrap();
    assert_eq!(c.api_token().as_deref(), Some("t"));
    // A value and a file in the same layer are ambiguous.
    let problems = load(
        &NodeArgs::default(),
        &[("SYMPHONY_COOKIE", "a"), ("SYMPHONY_COOKIE_FILE", "/x")],
    )
    .unwrap_err();
    assert!(problems[0].contains("both set"), "{problems:?}");
}

#[test]
fn secret_files_are_read_trimmed_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cookie = write(dir.path(), "cookie", "\n  s3cret \n");
    let empty = write(dir.path(), "empty", " \n");
    let file = write(
        dir.path(),
        "node.yaml",
        &format!(
            "cookie_file: {}\nseeds: [127.0.0.1:7401]\n",
            cookie.display()
        ),
    );
    let c = load(&with_file(&file), &[]).unwrap();
    assert_eq!(c.cookie.as_deref(), Some("s3cret"));
    assert_eq!(c.cookie().as_deref(), Some("s3cret"));
    assert!(!format!("{c:?}").contains("s3cret"), "Debug hides secrets");

    // A later layer's value replaces an earlier layer's file.
    let c = load(&with_file(&file), &[("SYMPHONY_COOKIE", "from-env")]).unwrap();
    assert_eq!(c.cookie().as_deref(), Some("from-env"));
    assert_eq!(c.cookie_file, None);

    let problems = load(
        &NodeArgs {
            cookie_file: Some(dir.path().join("missing")),
            api_token_file: Some(empty.clone()),
            ..NodeArgs::default()
        },
        &[],
    )
    .unwrap_err();
    let all = problems.join("\n");
    assert!(all.contains("cookie_file: cannot read"), "{all}");
    assert!(
        all.contains("api_token_file:") && all.contains("is empty"),
        "{all}"
    );

    // validate() on a hand-built config reads the files too.
    let hand = NodeConfig {
        seeds: vec!["127.0.0.1:7401".into()],
        cookie_file: Some(cookie),
        ..NodeConfig::default()
    };
    assert!(hand.validate().is_ok());
    assert_eq!(hand.cookie().as_deref(), Some("s3cret"));
}

#[test]
fn bad_files_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expect) in [
        ("[1, 2]", "expected a mapping of options, found a list"),
        ("slots: [\n", "not valid YAML"),
        ("labels: [a]", "labels: expected a mapping"),
        ("seeds: node1:7400", "seeds: expected a list"),
        ("heartbeat: 1s", "heartbeat: expected a mapping"),
        ("peers: [a:1]", "did you mean \"seeds\"?"),
    ] {
        let file = write(dir.path(), "f.yaml", text);
        let problems = load(&with_file(&file), &[]).unwrap_err().join("\n");
        assert!(problems.contains(expect), "{text:?}: {problems}");
    }
    let problems = load(&with_file(&dir.path().join("nope.yaml")), &[]).unwrap_err();
    assert!(
        problems[0].contains("cannot read the config file"),
        "{problems:?}"
    );
    // An empty file is all defaults.
    let file = write(dir.path(), "empty.yaml", "# nothing\n");
    assert!(load(&with_file(&file), &[]).is_ok());
}

#[test]
fn the_example_config_files_load_and_validate() {
    let dir = repo().join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        seen += 1;
        let c = load(&with_file(&path), &[])
            .unwrap_or_else(|p| panic!("{}:\n{}", path.display(), p.join("\n")));
        c.validate().unwrap();
    }
    assert!(seen >= 4, "config/ holds single.yaml and node1..3.yaml");

    // single.yaml spells out the defaults: it loads as no file does.
    let single = load(&with_file(&dir.join("single.yaml")), &[]).unwrap();
    assert_eq!(single, load(&NodeArgs::default(), &[]).unwrap());

    let node = |n: u32| load(&with_file(&dir.join(format!("node{n}.yaml"))), &[]).unwrap();
    let (n1, n2, n3) = (node(1), node(2), node(3));
    assert!(n1.seeds.is_empty());
    assert_eq!(n2.seeds, vec![n1.cluster_addr()]);
    assert_eq!(n3.seeds, vec![n2.cluster_addr()], "node3 seeds only node2");
    assert_eq!(
        [n1.listen.port(), n2.listen.port(), n3.listen.port()],
        [7401, 7402, 7403]
    );
    assert_eq!(
        [n1.http.port(), n2.http.port(), n3.http.port()],
        [8081, 8082, 8083]
    );
    assert!(n1.cookie().is_some() && n1.cookie() == n2.cookie() && n2.cookie() == n3.cookie());
    assert_eq!(n3.labels.get("gpu").map(String::as_str), Some("true"));
    assert!(n1.data_dir != n2.data_dir && n2.data_dir != n3.data_dir);
}

#[test]
fn the_node_command_exits_78_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad.yaml", "slots: 0\nlisten: 0.0.0.0:7400\n");
    let out = run_in(
        dir.path(),
        &[
            "node",
            "--config",
            "bad.yaml",
            "--suspect-after",
            "1s",
            "--down-after",
            "1ms",
        ],
    );
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for e in [
        "error: slots: must be at least 1",
        "error: cookie:",
        "error: heartbeat.suspect_after (1s) must be shorter than heartbeat.down_after (1ms)",
    ] {
        assert!(stderr.contains(e), "missing {e:?} in:\n{stderr}");
    }

    let out = run_in(
        repo(),
        &["node", "--config", "config/node3.yaml", "--check"],
    );
    assert_eq!(out.status.code(), Some(0));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("name: node3"), "{shown}");
    assert!(shown.contains("cookie: <hidden>"), "{shown}");
    assert!(!shown.contains("symphony-demo-cookie"), "{shown}");
}
