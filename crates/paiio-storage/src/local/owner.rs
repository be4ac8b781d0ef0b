//! Who owns a write session: the process that created it in-process (an import, an embedded
//! writer), so vacuum can tell a session whose process was killed from one in use.
//!
//! An owner is the host name, the boot id, the pid and the process's start time (Linux:
//! field 22 of `/proc/PID/stat`, in clock ticks since boot), which together tell a live process
//! from a later one that reuses its pid. Owners are known on Linux only; elsewhere none is
//! recorded and sessions go when they expire. A warehouse shared by processes in different pid
//! namespaces under the same host name (containers given the same name) must not record
//! owners ([`super::LocalWarehouseBuilder::record_session_owner`]).

use std::fs;

use serde::{Deserialize, Serialize};

/// The process that created a write session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionOwner {
    pub host: String,
    /// Changes at every boot (empty if unknown).
    #[serde(default)]
    pub boot_id: String,
    pub pid: u32,
    /// Clock ticks from boot to the process's start.
    pub start_ticks: u64,
}

impl SessionOwner {
    /// This process, where owners are known.
    pub fn this_process() -> Option<Self> {
        let pid = std::process::id();
        Some(SessionOwner {
            host: host_name()?,
            boot_id: boot_id(),
            pid,
            start_ticks: start_ticks(pid)?,
        })
    }

    /// Whether the owner is known to be gone: it ran on this host (and boot) and its pid is
    /// no longer running, or runs another process. An owner on another host is not known.
    pub fn is_gone(&self) -> bool {
        if host_name().as_deref() != Some(self.host.as_str()) {
            return false;
        }
        let boot = boot_id();
        if !self.boot_id.is_empty() && !boot.is_empty() && boot != self.boot_id {
            return true;
        }
        match fs::metadata(format!("/proc/{}", self.pid)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
            Ok(_) => start_ticks(self.pid).is_some_and(|t| t != self.start_ticks),
        }
    }
}

fn host_name() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of `/proc/PID/stat`, `starttime`. The second field (the command) is in
/// parentheses and may hold spaces or parentheses: fields are counted after the last `)`.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state).
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = SessionOwner::this_process().expect("owners are known on Linux");
        assert!(!me.is_gone());
        let reused = SessionOwner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(
            reused.is_gone(),
            "the same pid with another start time is another process"
        );
        let rebooted = SessionOwner {
            boot_id: "another boot".into(),
            ..me.clone()
        };
        assert!(rebooted.is_gone());
        let elsewhere = SessionOwner {
            host: format!("{}-elsewhere", me.host),
            start_ticks: 1,
            ..me.clone()
        };
        assert!(
            !elsewhere.is_gone(),
            "a process on another host is not known to be gone"
        );
        // Pids are below 2^22 on Linux.
        let missing = SessionOwner {
            pid: u32::MAX - 1,
            ..me
        };
        assert!(missing.is_gone());
    }
}
