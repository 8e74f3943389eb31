//! The Kubernetes manifests: `kubernetes-validate` against its bundled schemas, strict, and what
//! the pods must take from where.

use super::*;

/// The program `kubernetes-validate`: from `KUBERNETES_VALIDATE`, else the virtualenv that
/// scripts/test makes under target/.
fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("KUBERNETES_VALIDATE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/deploy-venv/bin/kubernetes-validate"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: scripts/test installs it (python3 -m venv target/deploy-venv && \
         target/deploy-venv/bin/pip install kubernetes-validate; Debian package `python3-venv`)",
        path.display()
    );
    path
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml")
            && path.file_name().is_some_and(|n| n != "kustomization.yaml")
        {
            out.push(path);
        }
    }
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let validate = kubernetes_validate();
    let mut files = Vec::new();
    yaml_files(&deploy("kubernetes"), &mut files);
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    let out = Command::new(&validate)
        .arg("--strict")
        .args(&files)
        .output()
        .expect("running kubernetes-validate");
    assert_ok("kubernetes-validate --strict", &out);
    let report = String::from_utf8_lossy(&out.stdout);
    for kind in [
        "statefulset/clickedge",
        "service/clickedge",
        "poddisruptionbudget/clickedge",
    ] {
        assert!(report.contains(kind), "{kind} not validated:\n{report}");
    }
    // Every file a kustomization lists exists (kustomize itself is not a Debian package).
    for overlay in ["base", "overlays/single-node", "overlays/cluster"] {
        let dir = deploy("kubernetes").join(overlay);
        let k = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
        for entry in k
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .filter(|e| e.ends_with(".yaml") || e.ends_with(".toml") || e.starts_with(".."))
        {
            assert!(dir.join(entry).exists(), "{overlay} lists missing {entry}");
        }
    }
}

#[test]
fn kubernetes_pods_outlast_shutdown_delay_and_grace() {
    for overlay in ["single-node", "cluster"] {
        let dir = deploy("kubernetes/overlays").join(overlay);
        let config: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("clickedge.toml")).unwrap()).unwrap();
        let secs = |key: &str| -> u64 {
            let v = config[key].as_str().expect(key);
            v.strip_suffix('s').unwrap().parse().unwrap()
        };
        let workload = std::fs::read_to_string(dir.join("statefulset.yaml")).unwrap();
        let period: u64 = workload
            .lines()
            .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
            .expect("terminationGracePeriodSeconds")
            .parse()
            .unwrap();
        assert!(
            period >= secs("shutdown_delay") + secs("shutdown_grace") + 10,
            "{overlay}: terminationGracePeriodSeconds {period} leaves no room to write the clicks"
        );
        assert!(workload.contains("path: /readyz") && workload.contains("path: /healthz"));
    }
}

/// The click log's cap fits the volume it is on, with room left for the rest of the data dir: a
/// cap over the volume fills the disk first, and then nothing (the cap included) frees it.
/// Each pod also has a writable /tmp under its read-only root.
#[test]
fn kubernetes_click_logs_are_capped_below_their_volume() {
    for overlay in ["single-node", "cluster"] {
        let dir = deploy("kubernetes/overlays").join(overlay);
        let config = clickedge::config::Config::load(Some(&dir.join("clickedge.toml"))).unwrap();
        let workload = std::fs::read_to_string(dir.join("statefulset.yaml")).unwrap();
        let gi: u64 = workload
            .lines()
            .find_map(|l| l.trim().strip_prefix("storage: "))
            .and_then(|v| v.strip_suffix("Gi"))
            .expect("a volume claim's storage in Gi")
            .parse()
            .unwrap();
        let cap = config.clicks.max_total_bytes;
        assert!(
            cap != 0 && cap <= gi * (1 << 30) * 9 / 10,
            "{overlay}: clicks.max_total_bytes {cap} on a {gi}Gi volume"
        );
        assert!(
            workload.contains("mountPath: /tmp") && workload.contains("emptyDir:"),
            "{overlay}: no writable /tmp under the read-only root"
        );
    }
}

#[test]
fn cluster_pods_take_the_seal_key_from_the_environment_not_a_secret_volume() {
    let dir = deploy("kubernetes/overlays/cluster");
    let config = clickedge::config::Config::load(Some(&dir.join("clickedge.toml"))).unwrap();
    // The edge refuses both a key file and CLICKEDGE_SEAL_KEY.
    assert_eq!(config.cluster.seal_key_file, None);
    let workload = std::fs::read_to_string(dir.join("statefulset.yaml")).unwrap();
    let env = format!(
        "- name: {}\n              valueFrom:\n                secretKeyRef:\n                  name: clickedge-seal\n                  key: seal.key\n",
        clickedge::seal::SEAL_KEY_ENV
    );
    assert!(workload.contains(&env), "no {env} in the StatefulSet");
    // With fsGroup the kubelet makes a Secret volume's files 0440: a key file there is refused.
    assert!(workload.contains("fsGroup: 10001"));
    assert!(
        !workload.contains("secretName: clickedge-seal"),
        "the seal key mounted from a Secret volume"
    );
    // The Secret as the kustomization makes it: the file `clickedge cluster keygen` writes, under
    // the key seal.key; its text (newline included) is the value the pods get.
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    assert!(kustomization.contains(
        "clickedge cluster keygen seal.key && kubectl -n clickedge create secret generic clickedge-seal --from-file=seal.key"
    ));
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("seal.key");
    let out = run(
        common::bin(),
        &["cluster", "keygen", key.to_str().unwrap()],
        tmp.path(),
        "clickedge",
    );
    assert_ok("clickedge cluster keygen", &out);
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.trim_end().len(), 64, "{text:?}");
    assert!(
        clickedge::seal::SealKey::load(None, Some(&text))
            .unwrap()
            .is_some()
    );
    // What the same file would be on a Secret volume under fsGroup: refused.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o440)).unwrap();
    assert!(clickedge::seal::SealKey::load(Some(&key), None).is_err());
}

#[test]
fn cluster_store_url_names_the_database_host_not_a_kubernetes_alias() {
    // sslmode=require verifies the server's certificate against the URL's host: a Service name
    // (an ExternalName alias) is not the name a managed database's certificate carries.
    let dir = deploy("kubernetes/overlays/cluster");
    let text = std::fs::read_to_string(dir.join("clickedge.toml")).unwrap();
    let config: toml::Table = toml::from_str(&text).unwrap();
    let url = url::Url::parse(config["store"]["url"].as_str().expect("store.url")).unwrap();
    assert!(
        url.query().is_some_and(|q| q.contains("sslmode=require")),
        "{url}"
    );
    let host = url.host_str().unwrap();
    assert!(
        !host.ends_with(".svc") && !host.contains(".svc."),
        "store.url names the Service {host}"
    );
    let services = std::fs::read_to_string(dir.join("external-services.yaml")).unwrap();
    assert!(!services.contains("name: postgres"), "{services}");
}
