//! The shipped hooks.d entry matches what the hook understands (no root needed).

#[test]
fn hooks_d_entry_is_oci_hooks_1_0_0_for_the_dev_annotation() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/hooks.d/bindguard.json"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(v["version"], "1.0.0");
    assert_eq!(v["hook"]["path"], "/usr/local/bin/bindguard");
    assert_eq!(
        v["hook"]["args"],
        serde_json::json!(["bindguard", "oci-hook"])
    );
    let when = v["when"]["annotations"].as_object().unwrap();
    assert_eq!(when.keys().collect::<Vec<_>>(), [r"^io\.bindguard\.dev$"]);
    assert_eq!(bindguard::commands::oci::DEV, "io.bindguard.dev");
    let stages: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(stages, ["createRuntime", "poststop"]);
    for stage in stages {
        stage
            .parse::<bindguard::commands::oci::Stage>()
            .expect("a stage the hook runs at");
    }
    let installer = include_str!("../../deploy/kubernetes/bindguard-installer.yaml");
    assert!(installer.contains("/host/usr/local/bin/bindguard"));
    let pod = include_str!("../../deploy/kubernetes/example-pod.yaml");
    assert!(pod.contains("io.bindguard.dev:"));
}

/// The tarball install steps (docs/install.md) put nothing where the .deb puts its files
/// (/usr/bin, /usr/share, /usr/lib): a machine with both would have each overwrite the other's.
/// They install every man page and every shipped completion.
#[test]
fn readme_tarball_install_steps_stay_out_of_the_package_s_paths() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/install.md"))
            .unwrap();
    let from = readme
        .find("**Tarball**")
        .expect("docs/install.md has the tarball install");
    let block = &readme[from..];
    let block = &block[block.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    let installs: Vec<Vec<&str>> = block
        .lines()
        .map(|l| l.split('#').next().unwrap().split_whitespace().collect())
        .filter(|w: &Vec<&str>| w.first() == Some(&"install"))
        .collect();
    assert!(!installs.is_empty(), "{block}");
    let mut sources = Vec::new();
    for words in &installs {
        // `install [-D] [-m MODE] SRC... DEST` or `install ... -t DIR SRC...`.
        let dest = match words.iter().position(|w| *w == "-t") {
            Some(i) => words[i + 1],
            None => words.last().unwrap(),
        };
        assert!(
            dest.starts_with("/usr/local/") || dest.starts_with("/etc/"),
            "the tarball install writes {dest}, a path of the .deb's kind: {}",
            words.join(" ")
        );
        sources.extend(
            words
                .iter()
                .skip(1)
                .filter(|w| !w.starts_with('-') && !w.starts_with('/') && !w.starts_with('0')),
        );
    }
    for shipped in [
        "bindguard",
        "man/*.1",
        "completions/bindguard.bash",
        "completions/_bindguard",
        "completions/bindguard.fish",
        "hooks.d/bindguard.json",
    ] {
        assert!(
            sources.contains(&shipped),
            "the tarball install steps leave out {shipped}: {sources:?}"
        );
    }
}

/// The NRI DaemonSet gives the plugin the capabilities the NRI suite runs it with, no more,
/// and points it at the runtimes' default NRI socket.
#[test]
fn nri_daemonset_grants_what_the_nri_suite_runs_with() {
    let ds = include_str!("../../deploy/kubernetes/bindguard-nri.yaml");
    let add = ds
        .lines()
        .find_map(|l| l.trim().strip_prefix("add: ["))
        .and_then(|l| l.strip_suffix(']'))
        .expect("capabilities.add in the DaemonSet");
    let mut granted: Vec<String> = add.split(',').map(|c| c.trim().to_lowercase()).collect();
    granted.sort();
    let mut tested: Vec<String> = bindguard_tests::containerd::PLUGIN_CAPS
        .split(',')
        .filter_map(|c| c.strip_prefix('+'))
        .map(String::from)
        .collect();
    tested.sort();
    assert_eq!(granted, tested);
    assert!(ds.contains("drop: [ALL]"));
    assert!(ds.contains("hostPID: true") && ds.contains("hostNetwork: true"));
    assert!(ds.contains(&format!(
        r#"["/opt/bindguard/bindguard", "nri", "--socket", "{}", "--metrics", "0.0.0.0:{}"]"#,
        bindguard::service::nri::DEFAULT_SOCKET,
        bindguard::service::metrics::DEFAULT_PORT
    )));
    assert!(!ds.contains("privileged: true"));
}

/// The DaemonSet serves metrics on the documented port and probes the plugin with /healthz
/// (liveness) and /readyz (readiness) there, and its own pod tolerates a containerd 2.2 that
/// requires the plugin (it cannot be present before its own pod runs).
#[test]
fn nri_daemonset_probes_health_and_readiness_on_the_metrics_port() {
    let ds = include_str!("../../deploy/kubernetes/bindguard-nri.yaml");
    let port = bindguard::service::metrics::DEFAULT_PORT;
    assert!(
        ds.contains(&format!(
            "- {{name: metrics, containerPort: {port}, protocol: TCP}}"
        )),
        "the metrics port"
    );
    let probe = |kind: &str| {
        let at = ds
            .find(&format!("{kind}:"))
            .unwrap_or_else(|| panic!("{kind}"));
        ds[at..].lines().nth(1).unwrap().trim().to_string()
    };
    assert_eq!(
        probe("livenessProbe"),
        "httpGet: {path: /healthz, port: metrics}"
    );
    assert_eq!(
        probe("readinessProbe"),
        "httpGet: {path: /readyz, port: metrics}"
    );
    assert!(ds.contains(r#"tolerate-missing-plugins.noderesource.dev: "true""#));
    assert!(ds.contains(&format!(r#"prometheus.io/port: "{port}""#)));
}
