//! Link key commands: retire then remove, confirmation off a terminal, and in a cluster when a
//! rotated key seals and when the old one can go.

use super::common::{self, Edge};
use super::{client, run_client};

#[tokio::test]
async fn keys_retire_then_remove_which_without_yes_off_a_terminal_is_refused() {
    let edge = Edge::start();
    let (status, _) = edge.admin(reqwest::Method::POST, "/v1/keys", None).await;
    assert_eq!(status, 201);
    let run = |args: &[&str]| {
        client(&edge, args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let (_, keys) = edge.admin(reqwest::Method::GET, "/v1/keys", None).await;
    let before = keys.as_array().unwrap().len();
    let oldest = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["active"] != true)
        .unwrap()["id"]
        .as_u64()
        .unwrap()
        .to_string();
    let out = run(&["keys", "retire", &oldest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, keys) = edge.admin(reqwest::Method::GET, "/v1/keys", None).await;
    let sealing = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["active"] == true)
        .unwrap();
    assert!(sealing["retired_at"].is_null(), "{keys}");
    let retired = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == oldest.parse::<u64>().unwrap())
        .unwrap();
    assert!(retired["retired_at"].is_string(), "{keys}");
    let out = run(&["keys", "retire", &sealing["id"].to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("clickedge keys rotate") && err.contains("409"),
        "{err}"
    );
    let out = run(&["keys", "remove", &oldest]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "keys remove {oldest} --admin http://{} --yes",
            edge.admin
        )),
        "{err}"
    );
    let (_, keys) = edge.admin(reqwest::Method::GET, "/v1/keys", None).await;
    assert_eq!(keys.as_array().unwrap().len(), before);
    let out = run(&["keys", "remove", &oldest, "--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, keys) = edge.admin(reqwest::Method::GET, "/v1/keys", None).await;
    assert_eq!(keys.as_array().unwrap().len(), before - 1);
}

/// In a cluster a rotated key seals only once every node has it: `keys rotate` says from when,
/// and removing the key that seals meanwhile is refused saying when it can go, by the command
/// and by the API, rather than asking for yet another key.
#[tokio::test]
async fn in_a_cluster_rotate_says_when_the_key_seals_and_remove_when_the_old_one_can_go() {
    let url = common::postgres::shared().fresh_database();
    let edge = Edge::start_with_env(
        &[("CLICKEDGE_SEAL_KEY", &"5e".repeat(32))],
        &format!(
            "[store]\nurl = \"{url}\"\n[cluster]\nnode_id = \"edge-a\"\nscan_interval = \"1h\"\n"
        ),
    );
    let (ok, out, err) = run_client(&edge, &["keys", "rotate"]);
    assert!(ok, "{err}");
    let (_, keys) = edge.admin(reqwest::Method::GET, "/v1/keys", None).await;
    let new = &keys[0];
    assert_eq!(
        (&new["id"], &new["active"]),
        (&2.into(), &false.into()),
        "{keys}"
    );
    let from = new["seals_from"].as_str().expect("seals_from");
    assert!(keys[1].get("seals_from").is_none(), "key 1 seals: {keys}");
    assert!(
        out.contains(&format!(
            "key 2 opens links now and seals new links from {from}, once every node has it"
        )),
        "{out}"
    );
    let says = format!(
        "key 1 seals new links until key 2 is 2h 5s old ({from}), by when every node has key 2; \
         remove key 1 after that"
    );
    let (ok, _, err) = run_client(&edge, &["keys", "remove", "1", "--yes"]);
    assert!(!ok);
    assert!(err.contains(&says), "{err}");
    let (status, body) = edge
        .admin(reqwest::Method::DELETE, "/v1/keys/1", None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], says.as_str());
    let (_, keys) = edge.admin(reqwest::Method::GET, "/v1/keys", None).await;
    assert_eq!(keys.as_array().unwrap().len(), 2, "nothing removed: {keys}");
}
