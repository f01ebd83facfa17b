//! The rules between options, checked once every layer is applied: each
//! problem is reported, not only the first.

use std::net::IpAddr;
use std::time::Duration;

use super::NodeConfig;
use super::parse::check_host_port;

impl NodeConfig {
    /// The rules between options (secrets already resolved).
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push("name: must not be empty".into());
        } else if self
            .name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            problems.push(format!(
                "name: {:?} must not contain spaces or control characters",
                self.name
            ));
        }
        if let Some(advertise) = &self.advertise {
            if advertise.is_empty() || advertise.chars().any(char::is_whitespace) {
                problems.push(format!(
                    "advertise: {advertise:?} is not a host name or address"
                ));
            }
        }
        for seed in &self.seeds {
            if let Err(e) = check_host_port(seed) {
                problems.push(format!("seeds: {e}"));
            }
        }
        if self.cookie.as_deref() == Some("") {
            problems.push("cookie: must not be empty".into());
        }
        let reachable = !self.listen.ip().is_loopback();
        if self.cookie.is_none() && (reachable || !self.seeds.is_empty()) {
            let why = if self.seeds.is_empty() {
                format!("listen is {}, which other machines can reach", self.listen)
            } else {
                "the node joins seeds".into()
            };
            problems.push(format!(
                "cookie: a cluster cookie is required because {why}; set cookie, cookie_file, SYMPHONY_COOKIE or --cookie"
            ));
        }
        if self.api_token.as_deref() == Some("") {
            problems.push("api_token: must not be empty".into());
        }
        if self.api_token.is_none() && !self.http.ip().is_loopback() {
            problems.push(format!(
                "api_token: an API token is required because http is {}, which other machines can reach; set api_token, api_token_file, SYMPHONY_API_TOKEN or --api-token",
                self.http
            ));
        }
        if self.slots == 0 {
            problems.push("slots: must be at least 1".into());
        }
        let voters = &self.raft.voters;
        let distinct: std::collections::BTreeSet<&String> = voters.iter().collect();
        if !voters.is_empty() && !matches!(voters.len(), 3 | 5) {
            problems.push(format!(
                "raft.voters: {} voters given; a replicated log needs 3 or 5 (a majority of them must be up to commit)",
                voters.len()
            ));
        } else if distinct.len() != voters.len() {
            problems.push("raft.voters: a node is listed twice".into());
        }
        if voters
            .iter()
            .any(|v| v.trim().is_empty() || v.chars().any(char::is_whitespace))
        {
            problems.push("raft.voters: names must not be empty or contain spaces".into());
        }
        if self.max_invocations == 0 {
            problems.push("max_invocations: must be at least 1".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir: must not be empty".into());
        }
        if self.listen.port() != 0
            && self.listen.port() == self.http.port()
            && overlap(self.listen.ip(), self.http.ip())
        {
            problems.push(format!(
                "http: {} and listen: {} use the same port",
                self.http, self.listen
            ));
        }
        let hb = &self.heartbeat;
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if hb.interval.is_zero() {
            problems.push("heartbeat.interval: must be longer than 0".into());
        }
        if hb.interval >= hb.suspect_after {
            problems.push(format!(
                "heartbeat.interval ({}) must be shorter than heartbeat.suspect_after ({})",
                show(hb.interval),
                show(hb.suspect_after)
            ));
        }
        if hb.suspect_after >= hb.down_after {
            problems.push(format!(
                "heartbeat.suspect_after ({}) must be shorter than heartbeat.down_after ({})",
                show(hb.suspect_after),
                show(hb.down_after)
            ));
        }
        for (key, value) in &self.labels {
            if key.is_empty() {
                problems.push(format!(
                    "labels: a label with value {value:?} has an empty key"
                ));
            }
        }
        problems
    }
}

/// Whether two listening IPs can clash on one port.
pub(super) fn overlap(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}
