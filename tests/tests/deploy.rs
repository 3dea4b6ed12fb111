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
