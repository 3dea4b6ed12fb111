//! Bindings a service could not make, where `status` finds them.
//!
//! A binding that fails (a kernel refusal, a cgroup that cannot be opened, too few resources)
//! has no pins, so the kernel alone cannot show it; the running daemon keeps this file, and
//! `status` lists its entries as not bound. The file names the daemon's pid: a file left by a
//! daemon that is gone (killed) is ignored. `bindguard nri` keeps its own file the same way,
//! for annotated running containers its Synchronize could not bind (origin: the container).
//!
//! ```text
//! /run/bindguard/unbound      {"pid": 1234, "unbound": [{"cgroup": "...", "origin": "file:line", "why": "..."}]}
//! /run/bindguard/unbound-nri  {"pid": 5678, "unbound": [{"cgroup": "...", "origin": "nri: container 'main' (ID) of pod NS/NAME", "why": "..."}]}
//! ```

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Where the running daemon keeps its list.
pub const PATH: &str = "/run/bindguard/unbound";
/// Where the running NRI plugin keeps its list.
pub const NRI_PATH: &str = "/run/bindguard/unbound-nri";

/// One configured binding that is not bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbound {
    pub cgroup: PathBuf,
    /// `file:line` of its `[[binding]]`.
    pub origin: String,
    /// One line: why.
    pub why: String,
}

#[derive(Serialize, Deserialize)]
struct File {
    pid: u32,
    unbound: Vec<Unbound>,
}

/// Replaces the list (atomically: written aside, renamed into place); an empty list removes
/// the file.
pub fn publish(at: &Path, unbound: &[Unbound]) -> std::io::Result<()> {
    if unbound.is_empty() {
        return match fs::remove_file(at) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    if let Some(dir) = at.parent() {
        fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_vec(&File {
        pid: std::process::id(),
        unbound: unbound.to_vec(),
    })
    .map_err(std::io::Error::other)?;
    let aside = at.with_extension(format!("new-{}", std::process::id()));
    fs::write(&aside, text)?;
    fs::rename(&aside, at)
}

/// The running daemon's list (empty when there is none, or its daemon is gone).
pub fn read(at: &Path) -> Vec<Unbound> {
    let Ok(text) = fs::read(at) else {
        return Vec::new();
    };
    let Ok(file) = serde_json::from_slice::<File>(&text) else {
        return Vec::new();
    };
    let alive = fs::read_to_string(format!("/proc/{}/comm", file.pid))
        .is_ok_and(|comm| comm.trim() == "bindguard");
    if alive { file.unbound } else { Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_round_trips_and_an_empty_one_removes_the_file() {
        let dir = std::env::temp_dir().join(format!("bg-unbound-{}", std::process::id()));
        let at = dir.join("unbound");
        let one = Unbound {
            cgroup: "/sys/fs/cgroup/x".into(),
            origin: "/etc/bindguard/bindguard.toml:3".into(),
            why: "Too many open files".into(),
        };
        publish(&at, std::slice::from_ref(&one)).unwrap();
        // Written by this test process, whose comm is not "bindguard": read as gone.
        assert!(read(&at).is_empty());
        let file: File = serde_json::from_slice(&fs::read(&at).unwrap()).unwrap();
        assert_eq!(file.unbound, [one]);
        publish(&at, &[]).unwrap();
        assert!(!at.exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
