//! What a loaded program set leaves open on this kernel, and why, in one line: attach's
//! warning. `doctor` says the same per row after loading the programs itself.

use crate::kernel::{
    lsm,
    progset::{LeftOut, Set, Why},
};

/// One line naming the escape rows strict mode cannot cover with `set` and the reason for
/// each, or None when every row is covered. `loaded_now` is what this process's load of the
/// set left out (the loader's own words); for a set loaded earlier the recorded reasons are
/// used, so no attach probes the BPF LSM or parses the vmlinux BTF.
pub fn open_rows_warning(set: &Set, loaded_now: &[LeftOut]) -> Option<String> {
    let forced_off = lsm::forced_unavailable();
    let open = set.open_rows(|h| !(h.is_lsm() && forced_off));
    if open.is_empty() {
        return None;
    }
    // Each read once (one directory listing per absent program), not once per open hook.
    let absent = set.absent();
    let recorded = set
        .lsm_state()
        .filter(|s| *s != lsm::State::Usable)
        .map(|s| s.describe());
    let mut reasons: Vec<String> = Vec::new();
    for (_, hooks) in &open {
        for h in hooks {
            let why = match loaded_now.iter().find(|l| l.hook == *h) {
                _ if h.is_lsm() && forced_off => lsm::state(false).describe(),
                Some(l) => l.detail.clone(),
                None => match absent.iter().find(|(a, _)| a == h) {
                    Some((_, Why::LsmUnavailable)) => recorded.clone().unwrap_or_else(|| {
                        "the BPF LSM was not usable when this build's programs were loaded".into()
                    }),
                    Some((_, Why::BtfLacks)) => "the kernel's BTF lacks fields it reads".into(),
                    Some((a, Why::KernelLacks)) => {
                        format!("this kernel has no {} hook", a.needs().unwrap_or(a.name()))
                    }
                    _ => "the kernel refused it".into(),
                },
            };
            let line = format!("{}: {why}", h.name());
            if !reasons.contains(&line) {
                reasons.push(line);
            }
        }
    }
    Some(format!(
        "strict mode cannot cover escape rows {} on this kernel ({}); `bindguard doctor` lists every row",
        crate::kernel::escapes::row_list(&open),
        join_reasons(reasons)
    ))
}

/// "hook: reason" lines joined; when every hook has the same reason (the BPF LSM is off),
/// the hooks are listed once before it.
pub fn join_reasons(why: Vec<String>) -> String {
    let reason = |w: &String| w.split_once(": ").map(|(_, r)| r.to_string());
    let first = why.first().and_then(reason);
    if why.len() > 1 && why.iter().all(|w| reason(w) == first) {
        let names: Vec<&str> = why.iter().filter_map(|w| w.split(": ").next()).collect();
        return format!("{}: {}", names.join(", "), first.unwrap_or_default());
    }
    why.join("; ")
}

#[cfg(test)]
mod tests {
    use super::join_reasons;

    #[test]
    fn one_reason_is_said_once() {
        let same = vec![
            "lsm_a: the BPF LSM is off".to_string(),
            "lsm_b: the BPF LSM is off".to_string(),
        ];
        assert_eq!(join_reasons(same), "lsm_a, lsm_b: the BPF LSM is off");
        let differ = vec!["a: x".to_string(), "b: y".to_string()];
        assert_eq!(join_reasons(differ), "a: x; b: y");
    }
}
