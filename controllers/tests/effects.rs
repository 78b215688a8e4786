//! The effects server on a real Unix socket in a temporary data directory, over a
//! `MemoryStore`: every operation, the token and package checks, and the bounds (request
//! size, idle clients, connections, the notification rate).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use controllers::effects::{EffectsHost, EffectsServer, Limits, ops::NOTIFY_LIMIT};
use controllers::layout::Layout;
use crds::{API_VERSION, Object, ObjectMeta, kind_by_name};
use serde_json::{Value, json};
use store::{EngineConfig, MemoryStore, Store, WriteOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const PATIENCE: Duration = Duration::from_secs(10);

const MANIFEST: &str = r#"
id: hello-world
title: Hello World
version: "1.0.0:0"
license: MIT
description: {short: s, long: l}
arch: [x86_64]
images:
  main: {source: {directory: build/rootfs}}
daemons:
  main: {image: main, command: [httpd]}
interfaces:
  main: {name: Web UI, type: ui, daemon: main, internalPort: 8080, protocol: http}
actions:
  set-greeting: {name: Set, description: d, image: main, command: [sh]}
dependencies:
  dep: {kind: running, versionRange: "*"}
"#;

struct World {
    _tmp: tempfile::TempDir,
    layout: Layout,
    store: Arc<dyn Store>,
    server: EffectsServer,
}

fn obj(kind: &str, name: &str, spec: Value) -> Object {
    Object {
        api_version: API_VERSION.into(),
        kind: kind.into(),
        metadata: ObjectMeta::named(name),
        spec,
        status: None,
    }
}

async fn put(store: &Arc<dyn Store>, o: Object, status: Value) -> Result<Object> {
    let mut created = store.create(o, &WriteOptions::default()).await?;
    if !status.is_null() {
        created.status = Some(status);
        created = store
            .update_status(created, &WriteOptions::default())
            .await?;
    }
    Ok(created)
}

/// An installed archive holding just the manifest (all the effects server reads).
fn install(layout: &Layout) -> Result<String> {
    let manifest: sdk::Manifest = serde_saphyr::from_str(MANIFEST)?;
    let mut b = s9pk::ArchiveBuilder::new();
    b.add_bytes("manifest.json", serde_json::to_vec(&manifest)?)?;
    std::fs::create_dir_all(layout.archives())?;
    let tmp = layout.archives().join("new.part");
    let mut f = std::fs::File::create(&tmp)?;
    let root_hash = b
        .write_to(&s9pk::generate_key(), &mut f, &|_| {})?
        .to_string();
    drop(f);
    std::fs::rename(&tmp, layout.archive(&root_hash).context("a root hash")?)?;
    Ok(root_hash)
}

async fn world(limits: Limits) -> Result<World> {
    let tmp = tempfile::tempdir()?;
    let layout = Layout::new(tmp.path().join("data"));
    std::fs::create_dir_all(layout.containers())?;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(EngineConfig::default()));
    let root_hash = install(&layout)?;
    for pkg in ["hello-world", "dep", "other"] {
        // The container controller's preparation makes this.
        std::fs::create_dir_all(layout.container(pkg).path())?;
        let spec = json!({"source": {"file": "/x.s9pk", "rootHash": root_hash}});
        put(
            &store,
            obj("Package", pkg, spec),
            json!({"rootHash": root_hash}),
        )
        .await?;
        let spec = json!({"package": pkg, "rootHash": root_hash, "running": true});
        put(
            &store,
            obj("Container", pkg, spec),
            json!({"ip": format!("10.0.3.{}", pkg.len())}),
        )
        .await?;
        let spec = json!({"package": pkg, "interfaceId": "main", "displayName": "Web UI",
            "type": "ui", "internalPort": 8080});
        let status = json!({"addresses": [format!("http://{pkg}:8080")]});
        put(
            &store,
            obj("ServiceInterface", &format!("{pkg}-main"), spec),
            status,
        )
        .await?;
    }
    let server = EffectsServer::with_limits(store.clone(), layout.clone(), limits);
    Ok(World {
        _tmp: tmp,
        layout,
        store,
        server,
    })
}

impl World {
    fn socket(&self, container: &str) -> std::path::PathBuf {
        self.layout.container(container).effects_socket()
    }

    fn token(&self, container: &str) -> Result<String> {
        Ok(std::fs::read_to_string(
            self.layout.container(container).effects_token(),
        )?)
    }

    async fn get(&self, kind: &str, name: &str) -> Result<Object> {
        Ok(self
            .store
            .get(kind_by_name(kind).context("kind")?, name)
            .await?)
    }
}

/// One line out, one line back.
async fn ask(conn: &mut BufReader<UnixStream>, request: &Value) -> Result<Value> {
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    conn.get_mut().write_all(&line).await?;
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, conn.read_line(&mut answer)).await??;
    serde_json::from_str(&answer).with_context(|| format!("answer {answer:?}"))
}

async fn connect(socket: &Path) -> Result<BufReader<UnixStream>> {
    Ok(BufReader::new(UnixStream::connect(socket).await?))
}

/// Sends `op` with `args` to `container`'s socket with its own token.
async fn call(w: &World, container: &str, op: &str, args: Value) -> Result<Value> {
    let mut request = args;
    request["op"] = op.into();
    request["token"] = w.token(container)?.into();
    ask(&mut connect(&w.socket(container)).await?, &request).await
}

fn error(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn every_operation_changes_only_the_package_s_own_objects() -> Result<()> {
    let w = world(Limits::default()).await?;
    w.server.ensure("hello-world", "hello-world").await?;
    let dir = w.layout.container("hello-world").effects();
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mode = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.permissions().mode() & 0o7777);
    ensure!(mode(&dir)? == 0o755);
    ensure!(mode(&w.socket("hello-world"))? == 0o666);
    ensure!(
        std::fs::symlink_metadata(w.socket("hello-world"))?
            .file_type()
            .is_socket()
    );
    ensure!(mode(&w.layout.container("hello-world").effects_token())? == 0o444);
    ensure!(w.token("hello-world")?.len() == 64);

    let a = call(&w, "hello-world", "get-container-ip", json!({})).await?;
    ensure!(a == json!({"result": {"ip": "10.0.3.11"}}), "{a}");

    let a = call(
        &w,
        "hello-world",
        "set-health",
        json!({"check": "db", "result": "failure", "message": "no database"}),
    )
    .await?;
    ensure!(a["result"]["check"] == "db", "{a}");
    let pkg = w.get("Package", "hello-world").await?;
    let status = pkg.status.context("status")?;
    ensure!(
        status["reportedHealth"]["db"] == json!({"result": "failure", "message": "no database"}),
        "{status}"
    );
    ensure!(
        status.get("health").is_none(),
        "the probes' field is not touched"
    );

    let a = call(
        &w,
        "hello-world",
        "create-task",
        json!({"action": "set-greeting", "severity": "important", "reason": "pick one"}),
    )
    .await?;
    ensure!(
        a["result"]["task"] == "hello-world-effects-set-greeting",
        "{a}"
    );
    let task = w.get("Task", "hello-world-effects-set-greeting").await?;
    ensure!(
        task.metadata
            .labels
            .get("startos.dev/created-by")
            .map(String::as_str)
            == Some("effects")
    );
    ensure!(task.spec["severity"] == "important" && task.spec["package"] == "hello-world");
    let owner = &task.metadata.owner_references[0];
    ensure!(owner.kind == "Package" && owner.name == "hello-world" && !owner.controller);
    let a = call(
        &w,
        "hello-world",
        "create-task",
        json!({"action": "no-such-action", "severity": "critical"}),
    )
    .await?;
    ensure!(
        error(&a).contains("has no action \"no-such-action\""),
        "{a}"
    );
    let a = call(
        &w,
        "hello-world",
        "clear-task",
        json!({"action": "set-greeting"}),
    )
    .await?;
    ensure!(a["result"]["cleared"] == true, "{a}");
    ensure!(
        w.get("Task", "hello-world-effects-set-greeting")
            .await
            .is_err()
    );
    let a = call(
        &w,
        "hello-world",
        "clear-task",
        json!({"action": "set-greeting"}),
    )
    .await?;
    ensure!(a["result"]["cleared"] == false, "{a}");

    let a = call(
        &w,
        "hello-world",
        "export-interface",
        json!({"id": "main", "addresses": ["http://hello.example:8080/"]}),
    )
    .await?;
    ensure!(a.get("result").is_some(), "{a}");
    let si = w.get("ServiceInterface", "hello-world-main").await?;
    let st = si.status.context("status")?;
    ensure!(
        st["exportedAddresses"] == json!(["http://hello.example:8080/"]),
        "{st}"
    );
    ensure!(
        st["addresses"] == json!(["http://hello-world:8080"]),
        "the controller's field stays"
    );
    let a = call(
        &w,
        "hello-world",
        "export-interface",
        json!({"id": "main", "addresses": ["not a url"]}),
    )
    .await?;
    ensure!(error(&a).contains("is not a URL"), "{a}");
    let a = call(&w, "hello-world", "export-interface", json!({"id": "nope"})).await?;
    ensure!(error(&a).contains("declares no interface \"nope\""), "{a}");

    let a = call(
        &w,
        "hello-world",
        "get-interface",
        json!({"package": "dep", "interface": "main"}),
    )
    .await?;
    ensure!(
        a["result"]["addresses"] == json!(["http://dep:8080"]),
        "{a}"
    );
    let a = call(
        &w,
        "hello-world",
        "get-interface",
        json!({"package": "hello-world", "interface": "main"}),
    )
    .await?;
    ensure!(
        a["result"]["exportedAddresses"] == json!(["http://hello.example:8080/"]),
        "{a}"
    );
    let a = call(
        &w,
        "hello-world",
        "get-interface",
        json!({"package": "other", "interface": "main"}),
    )
    .await?;
    ensure!(
        error(&a) == "Package \"other\" is not a dependency of Package \"hello-world\"",
        "{a}"
    );

    let a = call(
        &w,
        "hello-world",
        "notify",
        json!({"level": "warning", "title": "Low disk", "message": "1 GB left"}),
    )
    .await?;
    let name = a["result"]["notification"]
        .as_str()
        .context("name")?
        .to_owned();
    let n = w.get("Notification", &name).await?;
    ensure!(
        n.spec
            == json!({"level": "warning", "title": "Low disk", "message": "1 GB left", "package": "hello-world"})
    );

    // The subject is the socket's package, whatever the request says.
    let a = call(
        &w,
        "hello-world",
        "set-health",
        json!({"package": "other", "check": "db", "result": "success"}),
    )
    .await?;
    ensure!(
        error(&a).contains("belongs to package \"hello-world\""),
        "{a}"
    );
    let a = call(
        &w,
        "hello-world",
        "set-health",
        json!({"check": "Not An Id", "result": "success"}),
    )
    .await?;
    ensure!(error(&a).starts_with("check \"Not An Id\""), "{a}");
    let a = call(&w, "hello-world", "reboot", json!({})).await?;
    ensure!(error(&a).starts_with("bad request"), "{a}");

    // The CLI's client code against the same socket.
    let (socket, token) = (w.socket("hello-world"), w.token("hello-world")?);
    let ip = tokio::task::spawn_blocking(move || {
        container_runtime::effects_cli::call(
            &socket,
            &token,
            "get-container-ip",
            Default::default(),
        )
    })
    .await??;
    ensure!(ip == json!({"ip": "10.0.3.11"}));

    w.server.remove("hello-world").await?;
    ensure!(!w.socket("hello-world").exists());
    ensure!(UnixStream::connect(w.socket("hello-world")).await.is_err());
    Ok(())
}

#[tokio::test]
async fn a_wrong_token_or_another_package_s_token_is_refused() -> Result<()> {
    let w = world(Limits::default()).await?;
    w.server.ensure("hello-world", "hello-world").await?;
    w.server.ensure("other", "other").await?;
    let request = |token: String| json!({"op": "get-container-ip", "token": token});
    let mut other = connect(&w.socket("other")).await?;
    let a = ask(&mut other, &request(w.token("hello-world")?)).await?;
    ensure!(
        error(&a) == "wrong token for the effects socket of package \"other\"",
        "{a}"
    );
    let mut flipped = w.token("other")?;
    let last = if flipped.ends_with('0') { "1" } else { "0" };
    flipped.replace_range(63.., last);
    let a = ask(&mut other, &request(flipped)).await?;
    ensure!(error(&a).starts_with("wrong token"), "{a}");
    let a = ask(&mut other, &json!({"op": "get-container-ip"})).await?;
    ensure!(error(&a) == "request carries no token", "{a}");
    // The same connection still answers the right token.
    let a = ask(&mut other, &request(w.token("other")?)).await?;
    ensure!(a["result"]["ip"] == "10.0.3.5", "{a}");
    // A socket made again (startd restarted) has a new token.
    let old = w.token("other")?;
    std::fs::remove_file(w.socket("other"))?;
    w.server.ensure("other", "other").await?;
    ensure!(w.token("other")? != old);
    let a = ask(&mut connect(&w.socket("other")).await?, &request(old)).await?;
    ensure!(error(&a).starts_with("wrong token"), "{a}");
    Ok(())
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_the_connection_closed() -> Result<()> {
    let w = world(Limits::default()).await?;
    w.server.ensure("hello-world", "hello-world").await?;
    let mut conn = connect(&w.socket("hello-world")).await?;
    let big = vec![b'x'; 100 * 1024];
    // The server stops reading at the limit: the rest may not be taken.
    let _ = tokio::time::timeout(PATIENCE, conn.get_mut().write_all(&big)).await;
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, conn.read_line(&mut answer)).await??;
    ensure!(answer.contains("longer than 65536 bytes"), "{answer}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut rest)).await;
    ensure!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed: {n:?}");
    Ok(())
}

#[tokio::test]
async fn idle_and_surplus_clients_cannot_hold_the_socket() -> Result<()> {
    let idle = Duration::from_millis(300);
    let w = world(Limits {
        idle,
        connections: 2,
    })
    .await?;
    w.server.ensure("hello-world", "hello-world").await?;
    let mut a = connect(&w.socket("hello-world")).await?;
    // A slow client: half a request, never finished.
    a.get_mut().write_all(b"{\"op\":").await?;
    let mut b = connect(&w.socket("hello-world")).await?;
    let mut third = connect(&w.socket("hello-world")).await?;
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, third.read_line(&mut answer)).await??;
    ensure!(
        answer
            .contains("too many connections to the effects socket of package \\\"hello-world\\\""),
        "{answer}"
    );
    // Both are closed once idle, and the socket answers again.
    for conn in [&mut a, &mut b] {
        let mut rest = Vec::new();
        let n = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut rest)).await??;
        ensure!(n == 0, "closed without an answer");
    }
    let ok = call(&w, "hello-world", "get-container-ip", json!({})).await?;
    ensure!(ok["result"]["ip"] == "10.0.3.11", "{ok}");
    Ok(())
}

#[tokio::test]
async fn notifications_are_rate_limited_per_package() -> Result<()> {
    let w = world(Limits::default()).await?;
    w.server.ensure("hello-world", "hello-world").await?;
    w.server.ensure("other", "other").await?;
    let note = json!({"level": "info", "title": "hi"});
    for i in 0..NOTIFY_LIMIT {
        let a = call(&w, "hello-world", "notify", note.clone()).await?;
        ensure!(a.get("result").is_some(), "{i}: {a}");
    }
    let a = call(&w, "hello-world", "notify", note.clone()).await?;
    ensure!(
        error(&a) == "Package \"hello-world\" sent 10 notifications in the last 60s already",
        "{a}"
    );
    let a = call(&w, "other", "notify", note).await?;
    ensure!(
        a.get("result").is_some(),
        "another package has its own budget: {a}"
    );
    let list = w
        .store
        .list(kind_by_name("Notification").context("kind")?)
        .await?;
    ensure!(list.items.len() == NOTIFY_LIMIT + 1);
    Ok(())
}
