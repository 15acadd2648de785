//! `ordo-registry` as a program of its own: it prints where it listens,
//! serves the API there (with basic auth when asked), refuses bad
//! arguments with exit 2 and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

const SCHEMA: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"}]}"#;

/// Starts the binary on a free port; returns it and its base URL, read
/// from its first line.
fn start(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ordo-registry"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, url)
}

/// GET `url` as JSON.
async fn get(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

fn terminate(mut child: Child) -> Option<i32> {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    child.wait().unwrap().code()
}

#[tokio::test]
async fn it_serves_the_api_where_it_says_and_stops_on_sigterm() {
    let (child, url) = start(&["--compatibility", "full"], &[]);
    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{url}/subjects/orders-value/versions"))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(json!({ "schema": SCHEMA }).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = registered["id"].as_u64().unwrap();
    let by_id = get(&client, format!("{url}/schemas/ids/{id}")).await;
    let schema: Value = serde_json::from_str(by_id["schema"].as_str().unwrap()).unwrap();
    assert_eq!(schema["name"], "Order");
    let level = get(&client, format!("{url}/config")).await;
    assert_eq!(level["compatibilityLevel"], "FULL");
    assert_eq!(terminate(child), Some(0));
}

#[tokio::test]
async fn with_a_user_it_asks_for_basic_auth() {
    let dir = std::env::temp_dir().join(format!("ordo-registry-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("password");
    std::fs::write(&file, "s3cret\n").unwrap();
    for (args, env) in [
        (
            vec!["--user", "ordo", "--password-file", file.to_str().unwrap()],
            vec![],
        ),
        (
            vec!["--user", "ordo"],
            vec![("ORDO_REGISTRY_PASSWORD", "s3cret")],
        ),
    ] {
        let (child, url) = start(&args, &env);
        let client = reqwest::Client::new();
        let anonymous = client.get(format!("{url}/subjects")).send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
        let wrong = client
            .get(format!("{url}/subjects"))
            .basic_auth("ordo", Some("nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        let right = client
            .get(format!("{url}/subjects"))
            .basic_auth("ordo", Some("s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200);
        assert_eq!(terminate(child), Some(0));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_exit_2_naming_them() {
    let none: Vec<(&str, &str)> = Vec::new();
    for (args, env, says) in [
        (
            vec!["--compatibility", "sideways"],
            none.clone(),
            "not a compatibility level",
        ),
        (
            vec!["--user", "ordo"],
            none.clone(),
            "ORDO_REGISTRY_PASSWORD",
        ),
        (
            vec!["--user", "ordo", "--password-file", "/nonexistent/password"],
            none.clone(),
            "/nonexistent/password",
        ),
        (vec!["--listen", "8081"], none, "--listen"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ordo-registry"))
            .args(&args)
            .envs(env.iter().copied())
            .env_remove("ORDO_REGISTRY_PASSWORD")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
