//! Where demorecon keeps its state: `$DEMORECON_HOME`, else the XDG data directory.

use std::path::PathBuf;

/// The data directory: `$DEMORECON_HOME` if set, else `$XDG_DATA_HOME/demorecon`, else
/// `~/.local/share/demorecon`. Not created here.
pub fn data_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("DEMORECON_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("demorecon");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/demorecon")
}
