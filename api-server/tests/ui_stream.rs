//! The UI WebSocket: a dump of the public model, then RFC 6902 patches that keep a client's
//! copy equal to the store.

mod common;

use std::collections::BTreeMap;

use common::{JSON_CT, PACKAGES, TIMEOUT, TestServer, package_json};
use crds::{KindClass, kinds};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use store::Store;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(s: &TestServer) -> Ws {
    connect_async(format!("ws://{}/ws/ui", s.addr))
        .await
        .expect("websocket connects")
        .0
}

/// The next text message, parsed; `None` when the server closed the socket.
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a message in time")
        {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
            Some(Ok(Message::Text(t))) => {
                return Some(serde_json::from_str(&t).expect("messages are JSON"));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// What the model should be: every non-secret object in the store.
async fn expected_model(s: &TestServer) -> Value {
    let mut model = serde_json::Map::new();
    for kind in kinds().iter().filter(|k| k.class != KindClass::Secret) {
        let objects: BTreeMap<String, Value> = s
            .store
            .list(kind)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|o| (o.metadata.name.clone(), serde_json::to_value(&o).unwrap()))
            .collect();
        model.insert(kind.plural.to_owned(), json!(objects));
    }
    Value::Object(model)
}

fn apply(model: &mut Value, msg: &Value) {
    assert_eq!(msg["type"], "patch", "{msg}");
    let ops: json_patch::Patch =
        serde_json::from_value(msg["patch"].clone()).expect("RFC 6902 operations");
    json_patch::patch(model, &ops).expect("the patch applies to the client's model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_then_patches_keep_clients_in_sync() {
    let s = TestServer::start(100).await;
    s.json("POST", PACKAGES, JSON_CT, &package_json("web"))
        .await;
    let secret = json!({"apiVersion": "startos.dev/v1alpha1", "kind": "Secret", "metadata": {"name": "pw"},
        "spec": {"data": {"password": "hunter2"}}});
    s.json(
        "POST",
        "/apis/startos.dev/v1alpha1/secrets",
        JSON_CT,
        &secret.to_string(),
    )
    .await;

    let mut first = connect(&s).await;
    let dump = next(&mut first).await.unwrap();
    assert_eq!(dump["type"], "dump");
    assert!(
        dump["revision"].as_str().is_some_and(|r| !r.is_empty()),
        "{dump}"
    );
    assert!(
        dump["model"].get("secrets").is_none(),
        "secrets are not in the public model"
    );
    assert!(!dump.to_string().contains("hunter2"));
    let mut model = dump["model"].clone();
    assert_eq!(model, expected_model(&s).await);
    let mut second = connect(&s).await;
    let dump2 = next(&mut second).await.unwrap();
    assert_eq!(dump2["model"], model);

    let (_, created) = s.json("POST", PACKAGES, JSON_CT, &package_json("db")).await;
    s.json(
        "PATCH",
        &format!("{PACKAGES}/web"),
        "application/merge-patch+json",
        r#"{"spec":{"running":false}}"#,
    )
    .await;
    s.send(
        "DELETE",
        &format!("{PACKAGES}/db"),
        &[],
        bytes::Bytes::new(),
    )
    .await;
    s.json(
        "POST",
        "/apis/startos.dev/v1alpha1/secrets",
        JSON_CT,
        &secret.to_string().replace("\"pw\"", "\"pw2\""),
    )
    .await;
    s.json("POST", PACKAGES, JSON_CT, &package_json("last"))
        .await;

    let mut messages = Vec::new();
    for _ in 0..4 {
        let msg = next(&mut first).await.unwrap();
        apply(&mut model, &msg);
        messages.push(msg);
    }
    assert_eq!(messages[0]["patch"][0]["op"], "add");
    assert_eq!(messages[0]["patch"][0]["path"], "/packages/db");
    assert_eq!(
        messages[0]["revision"],
        created["metadata"]["resourceVersion"]
    );
    assert!(
        messages[1]["patch"]
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "/packages/web/spec/running"),
        "{}",
        messages[1]
    );
    assert_eq!(
        messages[2]["patch"],
        json!([{"op": "remove", "path": "/packages/db"}])
    );
    assert_eq!(
        messages[3]["patch"][0]["path"], "/packages/last",
        "the secret made no message"
    );
    assert_eq!(
        model,
        expected_model(&s).await,
        "dump + patches = the store"
    );
    for msg in &messages {
        assert_eq!(
            next(&mut second).await.as_ref(),
            Some(msg),
            "every client gets the same patches"
        );
    }

    // A client may talk (pings, text); it is ignored.
    first.send(Message::Text("hello".into())).await.unwrap();
    s.stop().await;
    assert!(
        next(&mut first).await.is_none(),
        "shutdown closes the stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_store_watch_sends_a_fresh_dump() {
    let s = TestServer::start(100).await;
    s.fail_next_watch_after(1);
    let mut ws = connect(&s).await;
    let dump = next(&mut ws).await.unwrap();
    assert_eq!(dump["model"]["packages"], json!({}));
    s.json("POST", PACKAGES, JSON_CT, &package_json("a")).await;
    let patch = next(&mut ws).await.unwrap();
    assert_eq!(patch["patch"][0]["path"], "/packages/a");
    let redump = next(&mut ws).await.unwrap();
    assert_eq!(redump["type"], "dump", "{redump}");
    assert!(redump["model"]["packages"]["a"].is_object());
    s.json("POST", PACKAGES, JSON_CT, &package_json("b")).await;
    let patch = next(&mut ws).await.unwrap();
    assert_eq!(patch["patch"][0]["path"], "/packages/b");
}
