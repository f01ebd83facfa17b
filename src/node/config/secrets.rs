//! Secrets read from files, and the host name for the default node name.

use std::path::Path;

use super::FALLBACK_NAME;

pub(super) fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_owned())
}

pub(super) fn secret(value: Option<&String>, file: Option<&Path>) -> Option<String> {
    value
        .cloned()
        .or_else(|| file.and_then(|p| read_secret(p).ok()))
}

/// The default node name: the host name, else `node`.
pub(super) fn default_name() -> String {
    hostname()
        .filter(|h| !h.chars().any(char::is_whitespace))
        .unwrap_or_else(|| FALLBACK_NAME.into())
}

/// This machine's host name, from the kernel (Linux) or `/etc/hostname`.
pub(super) fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}
