use super::file::{HEARTBEAT_KEYS, KEYS, closest};
use super::parse::{check_host_port, parse_bool, parse_bytes};
use super::*;

#[test]
fn host_ports_split_with_ipv6_brackets() {
    assert_eq!(split_host_port("node1:7401"), Some(("node1", 7401)));
    assert_eq!(split_host_port("[::1]:7400"), Some(("::1", 7400)));
    assert_eq!(split_host_port("::1"), None);
    assert_eq!(split_host_port("node1"), None);
    assert_eq!(split_host_port("node1:x"), None);
    assert!(check_host_port("node1:0").is_err());
    assert!(check_host_port(":7400").is_err());
    assert!(check_host_port("10.0.0.5:7400").is_ok());
}

#[test]
fn cluster_addr_uses_advertise_then_listen() {
    let mut c = NodeConfig {
        listen: "10.0.0.5:7400".parse().unwrap(),
        ..NodeConfig::default()
    };
    assert_eq!(c.cluster_addr(), "10.0.0.5:7400");
    c.advertise = Some("node1".into());
    assert_eq!(c.cluster_addr(), "node1:7400");
    assert_eq!(c.cluster_addr_with_port(9000), "node1:9000");
    c.advertise = Some("public.example:17400".into());
    assert_eq!(c.cluster_addr(), "public.example:17400");
    assert_eq!(c.advertise_host(), "public.example");
    c.advertise = Some("::1".into());
    assert_eq!(c.cluster_addr(), "[::1]:7400");
    c.advertise = None;
    c.listen = "0.0.0.0:7400".parse().unwrap();
    assert!(!c.cluster_addr().starts_with("0.0.0.0"));
}

#[test]
fn typos_and_other_tools_names_are_suggested() {
    assert_eq!(closest("sedes", KEYS), Some("seeds"));
    assert_eq!(closest("peers", KEYS), Some("seeds"));
    assert_eq!(closest("data-dir", KEYS), Some("data_dir"));
    assert_eq!(closest("intervall", HEARTBEAT_KEYS), Some("interval"));
    assert_eq!(closest("zzzzzz", KEYS), None);
}

#[test]
fn max_invocations_is_set_in_every_layer_like_slots() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.yaml");
    std::fs::write(&file, "max_invocations: 10\n").unwrap();
    let with_file = NodeArgs {
        config: Some(file),
        ..NodeArgs::default()
    };
    let env = |value: &'static str| {
        move |key: &str| (key == env::MAX_INVOCATIONS).then(|| value.to_owned())
    };
    let none = |_: &str| None;

    let c = NodeConfig::load_with_env(&NodeArgs::default(), none).unwrap();
    assert_eq!(c.max_invocations, DEFAULT_MAX_INVOCATIONS);
    assert_eq!(c.max_invocations, 1024);
    let c = NodeConfig::load_with_env(&with_file, none).unwrap();
    assert_eq!(c.max_invocations, 10);
    let c = NodeConfig::load_with_env(&with_file, env("20")).unwrap();
    assert_eq!(c.max_invocations, 20);
    let flagged = NodeArgs {
        max_invocations: Some("30".into()),
        ..with_file.clone()
    };
    let c = NodeConfig::load_with_env(&flagged, env("20")).unwrap();
    assert_eq!(c.max_invocations, 30);
    assert!(
        c.to_redacted_yaml().contains("max_invocations: 30"),
        "{}",
        c.to_redacted_yaml()
    );

    let zero = NodeArgs {
        max_invocations: Some("0".into()),
        ..NodeArgs::default()
    };
    let problems = NodeConfig::load_with_env(&zero, env("many"))
        .unwrap_err()
        .problems()
        .to_vec();
    assert_eq!(
        problems,
        vec![
            "SYMPHONY_MAX_INVOCATIONS: \"many\" is not a whole number".to_owned(),
            "max_invocations: must be at least 1".to_owned(),
        ]
    );
    assert_eq!(closest("max_in_flight", KEYS), Some("max_invocations"));
    assert!(env::ALL.contains(&env::MAX_INVOCATIONS));
}

#[test]
fn debug_hides_secrets() {
    let c = NodeConfig {
        cookie: Some("s3cret".into()),
        api_token: Some("t0ken".into()),
        ..NodeConfig::default()
    };
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("t0ken"),
        "{shown}"
    );
    assert!(!c.to_redacted_yaml().contains("s3cret"));
}

#[test]
fn model_cache_and_chaos_are_set_in_every_layer() {
    assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
    assert_eq!(parse_bytes("500 MB"), Ok(500_000_000));
    assert_eq!(parse_bytes("1.5kib"), Ok(1536));
    assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
    assert!(parse_bytes("lots").is_err());
    assert!(parse_bytes("GiB").is_err());
    assert!(parse_bytes("-1").is_err());
    assert_eq!(show_bytes(2 << 30), "2GiB");
    assert_eq!(show_bytes(1000), "1000");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.yaml");
    std::fs::write(&file, "model_cache: 1GiB\nchaos: { corrupt_chunks: 2 }\n").unwrap();
    let with_file = NodeArgs {
        config: Some(file),
        ..NodeArgs::default()
    };
    let none = |_: &str| None;
    let c = NodeConfig::load_with_env(&NodeArgs::default(), none).unwrap();
    assert_eq!(
        (c.model_cache, c.chaos.corrupt_chunks),
        (DEFAULT_MODEL_CACHE, 0)
    );
    let c = NodeConfig::load_with_env(&with_file, none).unwrap();
    assert_eq!((c.model_cache, c.chaos.corrupt_chunks), (1 << 30, 2));
    let env = |key: &str| (key == env::MODEL_CACHE).then(|| "300MiB".to_owned());
    let c = NodeConfig::load_with_env(&with_file, env).unwrap();
    assert_eq!(c.model_cache, 300 << 20);
    let flagged = NodeArgs {
        model_cache: Some("1MiB".into()),
        chaos_corrupt_chunks: Some("0".into()),
        ..with_file.clone()
    };
    let c = NodeConfig::load_with_env(&flagged, env).unwrap();
    assert_eq!((c.model_cache, c.chaos.corrupt_chunks), (1 << 20, 0));
    assert!(c.to_redacted_yaml().contains("model_cache: 1MiB"));

    std::fs::write(
        dir.path().join("node.yaml"),
        "model_cache: big\nchaos: { corupt_chunks: 1 }\n",
    )
    .unwrap();
    let problems = NodeConfig::load_with_env(&with_file, none)
        .unwrap_err()
        .problems()
        .to_vec();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("model_cache: \"big\" is not a size"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("did you mean \"chaos.corrupt_chunks\"?"),
        "{problems:?}"
    );
}

#[test]
fn the_nemesis_is_off_unless_a_layer_enables_it() {
    assert_eq!(parse_bool("true"), Ok(true));
    assert_eq!(parse_bool(" ON "), Ok(true));
    assert_eq!(parse_bool("0"), Ok(false));
    assert!(parse_bool("maybe").unwrap_err().contains("not a boolean"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.yaml");
    std::fs::write(&file, "chaos: { nemesis: true }\n").unwrap();
    let with_file = NodeArgs {
        config: Some(file.clone()),
        ..NodeArgs::default()
    };
    let none = |_: &str| None;
    let c = NodeConfig::load_with_env(&NodeArgs::default(), none).unwrap();
    assert!(!c.chaos.nemesis);
    let c = NodeConfig::load_with_env(&with_file, none).unwrap();
    assert!(c.chaos.nemesis);
    assert!(c.to_redacted_yaml().contains("nemesis: true"));
    let env = |key: &str| (key == env::CHAOS_NEMESIS).then(|| "false".to_owned());
    let c = NodeConfig::load_with_env(&with_file, env).unwrap();
    assert!(!c.chaos.nemesis);
    let flagged = NodeArgs {
        chaos_nemesis: Some("true".into()),
        ..with_file.clone()
    };
    let c = NodeConfig::load_with_env(&flagged, env).unwrap();
    assert!(c.chaos.nemesis);

    std::fs::write(&file, "chaos: { nemesis: sometimes }\n").unwrap();
    let problems = NodeConfig::load_with_env(&with_file, none)
        .unwrap_err()
        .problems()
        .to_vec();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("chaos.nemesis"), "{problems:?}");
    let env = |key: &str| (key == env::CHAOS_NEMESIS).then(|| "2".to_owned());
    let problems = NodeConfig::load_with_env(&NodeArgs::default(), env)
        .unwrap_err()
        .problems()
        .to_vec();
    assert!(
        problems[0].contains("SYMPHONY_CHAOS_NEMESIS"),
        "{problems:?}"
    );
}
