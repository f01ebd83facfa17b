//! Parsers of option values, shared by the file, environment and flag
//! layers, and the host:port helpers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub(super) fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not an address; expected IP:PORT such as 127.0.0.1:7400 or 0.0.0.0:7400"
        )
    })
}

pub(super) fn parse_count(text: &str) -> Result<usize, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))
}

pub(super) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean; expected true or false")),
    }
}

pub(super) fn parse_u32(text: &str) -> Result<u32, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number from 0 to {}", u32::MAX))
}

/// A size: a whole number of bytes, or one with a unit (`B`, `KB`, `MB`,
/// `GB`, `TB` in powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` in powers of
/// 1024; case does not matter, a space may come before the unit).
pub(super) fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = (t[..split].trim(), t[split..].trim());
    let bad = || format!("{text:?} is not a size; write e.g. 2GiB, 500MB or 1048576");
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if number.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(scale).ok_or_else(bad);
    }
    let n: f64 = number.parse().map_err(|_| bad())?;
    let bytes = n * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// A size the way [`parse_bytes`] reads it back: in the largest binary
/// unit that divides it, else in bytes.
pub(super) fn show_bytes(bytes: u64) -> String {
    for (unit, scale) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= scale && bytes % scale == 0 {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 250ms, 1s or 2m"))
}

/// `k=v,k=v`.
pub(super) fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    comma_list(text)
        .iter()
        .map(|pair| parse_label(pair))
        .collect()
}

pub(super) fn parse_label(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{pair:?} is not a label; expected KEY=VALUE")),
    }
}

/// `host:port` → (host, port) when the text ends in a valid port; IPv6
/// hosts are written in brackets (`[::1]:7400`).
pub(super) fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    Some((host, port))
}

pub(super) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Checks a seed: a non-empty host and a port from 1 to 65535.
pub(super) fn check_host_port(seed: &str) -> Result<(), String> {
    match split_host_port(seed) {
        Some((host, port))
            if !host.is_empty() && port != 0 && !host.chars().any(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{seed:?} is not HOST:PORT (e.g. node1:7401, 10.0.0.5:7400 or [::1]:7400)"
        )),
    }
}

/// `raw` parsed, when given; a failure is recorded as a problem of `source`
/// (a variable or a flag).
pub(super) fn parsed<T>(
    source: &str,
    raw: Option<String>,
    parse: fn(&str) -> Result<T, String>,
    problems: &mut Vec<String>,
) -> Option<T> {
    match parse(raw?.trim()) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("{source}: {e}"));
            None
        }
    }
}

pub(super) fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}
