//! `start-cli` command logic over an in-memory store: apply, get, describe, diff, delete and
//! wait, as the binary runs them against the daemon; and where the binary sends credentials.

mod common;

use std::time::Duration;

use chrono::Utc;
use crds::{Condition, ConditionStatus, Object, kind_by_name};
use futures::StreamExt;
use serde_json::json;
use startbox::cli::{
    apply::{self, ApplyArgs, DryRun, Outcome, apply_documents, apply_object},
    delete::{self, DeleteArgs},
    describe::describe,
    diff::diff_documents,
    get::{self, GetArgs},
    input::{Document, parse_manifest},
    output::OutputFormat,
    wait::{WaitFor, wait_for},
};
use store::{MemoryStore, Patch, Store, Subresource, WriteOptions};

const PACKAGE: &str = "apiVersion: startos.dev/v1alpha1
kind: Package
metadata:
  name: nextcloud
  labels: {tier: apps}
spec:
  source: {registry: default, version: '^29.0'}
  running: true
";

const REGISTRY: &str = "apiVersion: startos.dev/v1alpha1
kind: Registry
metadata: {name: default}
spec: {url: 'https://registry.example.com'}
";

fn docs(text: &str) -> Vec<Document> {
    parse_manifest("test.yaml", text, false).unwrap()
}

async fn apply_text(store: &dyn Store, text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    apply_documents(store, docs(text), false, &mut |a| {
        lines.push(a.line(false));
        Ok(())
    })
    .await
    .unwrap();
    lines
}

fn pkg() -> &'static crds::KindInfo {
    kind_by_name("Package").unwrap()
}

async fn set_condition(
    store: &dyn Store,
    name: &str,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
) {
    let mut obj = store.get(pkg(), name).await.unwrap();
    let mut conds = obj.conditions();
    crds::set_condition(
        &mut conds,
        Condition::new(
            type_,
            status,
            reason,
            format!("{type_} is {status:?}"),
            Utc::now(),
        ),
    );
    obj.set_conditions(&conds);
    store
        .update_status(obj, &WriteOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn apply_reports_created_configured_unchanged() {
    let store = MemoryStore::default();
    let both = format!("{REGISTRY}---\n{PACKAGE}");
    assert_eq!(
        apply_text(&store, &both).await,
        ["registry/default created", "package/nextcloud created"]
    );
    assert_eq!(
        apply_text(&store, &both).await,
        ["registry/default unchanged", "package/nextcloud unchanged"]
    );
    let changed = PACKAGE.replace("running: true", "running: false");
    assert_eq!(
        apply_text(&store, &changed).await,
        ["package/nextcloud configured"]
    );
    let live = store.get(pkg(), "nextcloud").await.unwrap();
    assert_eq!(live.spec["running"], json!(false));
    assert_eq!(live.metadata.generation, Some(2));

    // A label-only change is a change too.
    let relabelled = changed.replace("tier: apps", "tier: apps, team: me");
    assert_eq!(
        apply_text(&store, &relabelled).await,
        ["package/nextcloud configured"]
    );
}

#[tokio::test]
async fn output_of_get_can_be_applied_again() {
    let store = MemoryStore::default();
    apply_text(&store, PACKAGE).await;
    let mut live = store.get(pkg(), "nextcloud").await.unwrap();
    live.status = Some(json!({"conditions": []}));
    let yaml = serde_saphyr::to_string(&live).unwrap();
    assert_eq!(
        apply_text(&store, &yaml).await,
        ["package/nextcloud unchanged"]
    );
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let store = MemoryStore::default();
    let applied = apply_object(&store, docs(PACKAGE).remove(0).object, true)
        .await
        .unwrap();
    assert_eq!(applied.outcome, Outcome::Created);
    assert_eq!(
        applied.line(true),
        "package/nextcloud created (server dry run)"
    );
    assert!(
        store
            .get(pkg(), "nextcloud")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn apply_stops_at_the_first_error_naming_file_and_document() {
    let store = MemoryStore::default();
    let bad = PACKAGE.replace("name: nextcloud", "name: Bad_Name");
    let text = format!(
        "{REGISTRY}---\n{bad}---\n{}",
        PACKAGE.replace("nextcloud", "later")
    );
    let mut lines = Vec::new();
    let err = apply_documents(&store, docs(&text), false, &mut |a| {
        lines.push(a.line(false));
        Ok(())
    })
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("test.yaml (document 2)"), "{msg}");
    assert!(msg.contains("metadata.name"), "{msg}");
    assert_eq!(lines, ["registry/default created"]);
    assert!(
        store.get(pkg(), "later").await.unwrap_err().is_not_found(),
        "nothing after the error is applied"
    );

    let err = apply_documents(
        &store,
        docs("apiVersion: startos.dev/v1alpha1\nkind: package\nmetadata: {name: x}\nspec: {}\n"),
        false,
        &mut |_| Ok(()),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("did you mean \"Package\""),
        "{err:#}"
    );
}

#[tokio::test]
async fn apply_command_reads_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), PACKAGE).unwrap();
    std::fs::write(dir.path().join("b.yml"), REGISTRY).unwrap();
    let store = MemoryStore::default();
    let mut out = Vec::new();
    let args = ApplyArgs {
        files: vec![dir.path().to_owned()],
        dry_run: DryRun::None,
    };
    assert_eq!(apply::run(&store, &args, &mut out).await.unwrap(), 0);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "package/nextcloud created\nregistry/default created\n"
    );
}

#[tokio::test]
async fn get_tables_names_json_and_selectors() {
    let store = MemoryStore::default();
    apply_text(&store, PACKAGE).await;
    apply_text(
        &store,
        &PACKAGE
            .replace("nextcloud", "btcpay")
            .replace("tier: apps", "tier: money"),
    )
    .await;
    set_condition(
        &store,
        "nextcloud",
        "Ready",
        ConditionStatus::True,
        "Running",
    )
    .await;

    let run =
        |kind: &str, name: Option<&str>, output: Option<OutputFormat>, selector: Option<&str>| {
            let args = GetArgs {
                kind: kind.into(),
                name: name.map(Into::into),
                output,
                selector: selector.map(|s| s.parse().unwrap()),
                watch: false,
            };
            let store = store.clone();
            async move {
                let mut out = Vec::new();
                get::run(&store, &args, &mut out, std::future::pending())
                    .await
                    .unwrap();
                String::from_utf8(out).unwrap()
            }
        };
    let table = run("pkg", None, None, None).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("READY") && lines[0].contains("AGE"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("btcpay ") && lines[1].contains(" - "),
        "{table}"
    );
    assert!(
        lines[2].starts_with("nextcloud") && lines[2].contains("True"),
        "{table}"
    );

    let wide = run("Packages", None, Some(OutputFormat::Wide), None).await;
    assert!(
        wide.contains("REGISTRY") && wide.contains("^29.0") && wide.contains("GENERATION"),
        "{wide}"
    );

    assert_eq!(
        run("package", None, Some(OutputFormat::Name), Some("tier=apps")).await,
        "package/nextcloud\n"
    );
    assert_eq!(
        run(
            "package",
            None,
            Some(OutputFormat::Name),
            Some("tier!=apps")
        )
        .await,
        "package/btcpay\n"
    );

    let list: serde_json::Value =
        serde_json::from_str(&run("packages", None, Some(OutputFormat::Json), None).await).unwrap();
    assert_eq!(list["kind"], "PackageList");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    let one: Object = serde_saphyr::from_str(
        &run("pkg", Some("nextcloud"), Some(OutputFormat::Yaml), None).await,
    )
    .unwrap();
    assert_eq!(one.metadata.name, "nextcloud");
    assert_eq!(one.conditions()[0].type_, "Ready");

    let args = GetArgs {
        kind: "nosuchkind".into(),
        name: None,
        output: None,
        selector: None,
        watch: false,
    };
    let err = get::run(&store, &args, &mut Vec::new(), std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown kind") && err.contains("packages"),
        "{err}"
    );
}

#[tokio::test]
async fn describe_shows_conditions_finalizers_and_events() {
    let store = MemoryStore::default();
    apply_text(&store, PACKAGE).await;
    set_condition(
        &store,
        "nextcloud",
        "Installed",
        ConditionStatus::False,
        "Fetching",
    )
    .await;
    let live = store.get(pkg(), "nextcloud").await.unwrap();
    let now = Utc::now();
    let event = |name: &str, target: &str, reason: &str, count: u32| Object {
        api_version: crds::API_VERSION.into(),
        kind: "Event".into(),
        metadata: crds::ObjectMeta::named(name),
        spec: json!({
            "involvedObject": {"kind": "Package", "name": target, "uid": live.metadata.uid},
            "type": "Warning",
            "reason": reason,
            "message": format!("{reason} happened"),
            "reportingController": "package",
            "count": count,
            "firstTimestamp": now,
            "lastTimestamp": now,
        }),
        status: None,
    };
    store
        .create(
            event("e1", "nextcloud", "FetchFailed", 3),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    store
        .create(event("e2", "other", "NotMine", 1), &WriteOptions::default())
        .await
        .unwrap();
    // A series published through the controllers' recorder: the repeat folds into a count.
    let recorder = controllers::runtime::Recorder::new(
        std::sync::Arc::new(store.clone()),
        "validity",
        store::Clock::system(),
    );
    for _ in 0..2 {
        recorder
            .publish(
                &live,
                crds::kinds::EventType::Normal,
                "Checked",
                "the spec is valid",
            )
            .await
            .unwrap();
    }
    store
        .patch(
            pkg(),
            "nextcloud",
            Patch::Merge(json!({"metadata": {"finalizers": ["startos.dev/uninstall"]}})),
            Subresource::Main,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    store
        .delete(
            pkg(),
            "nextcloud",
            &Default::default(),
            &WriteOptions::default(),
        )
        .await
        .unwrap();

    let text = describe(&store, "pkg", "nextcloud", now).await.unwrap();
    for want in [
        "Name:         nextcloud",
        "Labels:       tier=apps",
        "Annotations:  <none>",
        "Generation:   2 (observed: <none>)",
        "Deleting:     since",
        "waiting on finalizers [startos.dev/uninstall]",
        "  registry: default",
        "Installed   False    Fetching",
        "FetchFailed",
        "(x3 over",
        "package",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("NotMine"), "{text}");
    let series = text
        .lines()
        .find(|l| l.contains("Checked"))
        .unwrap_or_else(|| panic!("no recorded event in:\n{text}"));
    assert!(
        series.contains("Normal")
            && series.contains("(x2 over")
            && series.contains("validity")
            && series.contains("the spec is valid"),
        "{series}"
    );
}

#[tokio::test]
async fn diff_shows_what_apply_would_change() {
    let store = MemoryStore::default();
    apply_text(&store, PACKAGE).await;
    assert_eq!(diff_documents(&store, docs(PACKAGE)).await.unwrap(), "");
    let diff = diff_documents(
        &store,
        docs(&PACKAGE.replace("running: true", "running: false")),
    )
    .await
    .unwrap();
    assert!(
        diff.contains("--- live/package/nextcloud")
            && diff.contains("+++ merged/package/nextcloud"),
        "{diff}"
    );
    assert!(
        diff.contains("-  running: true") && diff.contains("+  running: false"),
        "{diff}"
    );
    assert!(
        !diff.contains("uid") && !diff.contains("resourceVersion") && !diff.contains("generation"),
        "{diff}"
    );
    assert_eq!(
        store.get(pkg(), "nextcloud").await.unwrap().spec["running"],
        json!(true),
        "diff changes nothing"
    );

    let new = diff_documents(&store, docs(REGISTRY)).await.unwrap();
    assert!(
        new.contains("+++ merged/registry/default")
            && new.contains("+  url: https://registry.example.com"),
        "{new}"
    );

    let err = diff_documents(&store, docs(&PACKAGE.replace("'^29.0'", "'not a range'")))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("spec.source.version"),
        "{err:#}"
    );
}

#[tokio::test]
async fn delete_reports_pending_finalizers_and_waits() {
    let store = MemoryStore::default();
    apply_text(&store, PACKAGE).await;
    apply_text(&store, &PACKAGE.replace("nextcloud", "btcpay")).await;
    store
        .patch(
            pkg(),
            "nextcloud",
            Patch::Merge(json!({"metadata": {"finalizers": ["startos.dev/a", "startos.dev/b"]}})),
            Subresource::Main,
            &WriteOptions::default(),
        )
        .await
        .unwrap();

    let args = |names: &[&str], wait: bool| DeleteArgs {
        kind: "pkg".into(),
        names: names.iter().map(|s| (*s).to_owned()).collect(),
        wait,
        timeout: Duration::from_secs(10),
        dry_run: DryRun::None,
    };
    let mut out = Vec::new();
    assert_eq!(
        delete::run(&store, &args(&["btcpay", "missing"], false), &mut out)
            .await
            .unwrap(),
        1,
        "a missing name fails the command"
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "package \"btcpay\" deleted\n"
    );

    // A controller removes its finalizers once it sees the deletion; `--wait` returns then.
    let mut events = store.watch(Some(pkg()), None).await.unwrap();
    let controller = {
        let store = store.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let obj = event.unwrap().object;
                if obj.metadata.name == "nextcloud" && obj.metadata.is_deleting() {
                    let clear = Patch::Merge(json!({"metadata": {"finalizers": null}}));
                    store
                        .patch(
                            pkg(),
                            "nextcloud",
                            clear,
                            Subresource::Main,
                            &WriteOptions::default(),
                        )
                        .await
                        .unwrap();
                    return;
                }
            }
        })
    };
    let mut out = Vec::new();
    assert_eq!(
        delete::run(&store, &args(&["nextcloud"], true), &mut out)
            .await
            .unwrap(),
        0
    );
    controller.await.unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "package \"nextcloud\" deletion pending on finalizers [startos.dev/a, startos.dev/b]\npackage \"nextcloud\" deleted\n"
    );
    assert!(
        store
            .get(pkg(), "nextcloud")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn wait_follows_the_watch_and_times_out_clearly() {
    let store = MemoryStore::default();
    apply_text(&store, PACKAGE).await;
    set_condition(
        &store,
        "nextcloud",
        "Ready",
        ConditionStatus::False,
        "Starting",
    )
    .await;

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            // Several unrelated writes first, then the one being waited for.
            for i in 0..5 {
                apply_text(&store, &PACKAGE.replace("nextcloud", &format!("other-{i}"))).await;
            }
            set_condition(
                &store,
                "nextcloud",
                "Ready",
                ConditionStatus::True,
                "Running",
            )
            .await;
        })
    };
    let ready = WaitFor::Condition {
        type_: "Ready".into(),
        status: "True".into(),
    };
    let obj = wait_for(&store, pkg(), "nextcloud", &ready, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert_eq!(obj.conditions()[0].reason, "Running");

    let healthy = WaitFor::Condition {
        type_: "Healthy".into(),
        status: "True".into(),
    };
    let err = wait_for(
        &store,
        pkg(),
        "nextcloud",
        &healthy,
        Duration::from_millis(100),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("timed out after 100ms")
            && err.contains("package/nextcloud")
            && err.contains("no Healthy condition"),
        "{err}"
    );

    let not_ready = WaitFor::Condition {
        type_: "Ready".into(),
        status: "False".into(),
    };
    let err = wait_for(
        &store,
        pkg(),
        "nextcloud",
        &not_ready,
        Duration::from_millis(100),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("currently Ready=True (Running)"), "{err}");

    let err = wait_for(&store, pkg(), "missing", &ready, Duration::from_secs(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not found"), "{err}");
    assert!(
        wait_for(
            &store,
            pkg(),
            "missing",
            &WaitFor::Delete,
            Duration::from_secs(1)
        )
        .await
        .unwrap()
        .is_none()
    );
}

/// A stand-in for startd over TCP: login hands out `token`, every other request gets an
/// empty list, and the `Authorization` header of each request is recorded.
struct FakeServer {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
}

async fn fake_server(bind: &str, token: &'static str) -> FakeServer {
    use axum::{Json, extract::State, http::HeaderMap, routing::post};
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>;
    fn record(seen: &Seen, headers: &HeaderMap) {
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        seen.lock().unwrap().push(auth);
    }
    let seen = Seen::default();
    let app = axum::Router::new()
        .route(
            "/auth/login",
            post(
                move |State(seen): State<Seen>, headers: HeaderMap| async move {
                    record(&seen, &headers);
                    Json(json!({"token": token}))
                },
            ),
        )
        .fallback(|State(seen): State<Seen>, headers: HeaderMap| async move {
            record(&seen, &headers);
            Json(json!({
                "apiVersion": crds::API_VERSION, "kind": "PackageList",
                "metadata": {"resourceVersion": "1"}, "items": [],
            }))
        })
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeServer { url, seen }
}

#[tokio::test]
async fn a_token_only_goes_to_the_host_it_was_issued_by() {
    let home = tempfile::tempdir().unwrap();
    let a = fake_server("127.0.0.1:0", "token-of-a").await;
    // Another loopback address is another host, as far as tokens go.
    let b = fake_server("127.0.0.2:0", "token-of-b").await;
    let run = |url: String, args: &'static [&'static str]| {
        let home = home.path().to_owned();
        async move {
            common::cli_with(
                |c| {
                    c.env("HOME", &home)
                        .env("STARTOS_PASSWORD", "pw")
                        .args(["--host", &url])
                },
                args,
            )
            .await
        }
    };
    let login = run(a.url.clone(), &["login"]).await;
    assert!(login.status.success(), "{}", common::stderr(&login));
    let on_a = run(a.url.clone(), &["get", "packages"]).await;
    assert!(on_a.status.success(), "{}", common::stderr(&on_a));
    let on_b = run(b.url.clone(), &["get", "packages"]).await;
    assert!(on_b.status.success(), "{}", common::stderr(&on_b));
    assert_eq!(
        a.seen.lock().unwrap().last().cloned().flatten().as_deref(),
        Some("Bearer token-of-a")
    );
    assert_eq!(
        *b.seen.lock().unwrap(),
        [None],
        "the token of {} was sent to {}",
        a.url,
        b.url
    );
}

#[tokio::test]
async fn credentials_never_go_over_plain_http_beyond_loopback() {
    use futures::FutureExt;
    // 0.0.0.0 reaches this machine, but it is not a loopback address: it stands for any
    // remote host without needing a network.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let url = format!("http://0.0.0.0:{}", listener.local_addr().unwrap().port());
    let home = tempfile::tempdir().unwrap();
    let with_token = common::cli_with(
        |c| {
            c.env("HOME", home.path())
                .env("STARTOS_TOKEN", "secret-token")
                .args(["--host", &url])
        },
        &["get", "packages"],
    )
    .await;
    let login = common::cli_with(
        |c| {
            c.env("HOME", home.path())
                .env("STARTOS_PASSWORD", "secret-password")
                .args(["--host", &url])
        },
        &["login"],
    )
    .await;
    for out in [&with_token, &login] {
        let err = common::stderr(out);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("0.0.0.0:") && err.contains("plain http"),
            "the refusal names the host: {err}"
        );
        assert!(!err.contains("secret-"), "{err}");
    }
    assert!(
        listener.accept().now_or_never().is_none(),
        "no connection was even opened"
    );
}

/// What a hostile file name or message could do to a terminal: clear it, set its title,
/// move the cursor (CSI as one C1 character), reorder text.
const HOSTILE: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{9b}1A\u{202e}";

fn assert_inert(text: &str) {
    assert!(
        !text
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "raw terminal controls in {text:?}"
    );
}

#[tokio::test]
async fn server_text_reaches_the_terminal_escaped() {
    let store = MemoryStore::default();
    apply_text(&store, PACKAGE).await;
    let message = format!("cannot parse desired/packages/{HOSTILE}.yaml\nforged: line");
    set_condition(&store, "nextcloud", "Valid", ConditionStatus::False, "Bad").await;
    let mut live = store.get(pkg(), "nextcloud").await.unwrap();
    let mut conds = live.conditions();
    conds[0].message = message.clone();
    live.set_conditions(&conds);
    let live = store
        .update_status(live, &WriteOptions::default())
        .await
        .unwrap();
    store
        .patch(
            pkg(),
            "nextcloud",
            Patch::Merge(json!({"metadata": {"annotations": {"note": format!("a{HOSTILE}")}}})),
            Subresource::Main,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let event = Object {
        api_version: crds::API_VERSION.into(),
        kind: "Event".into(),
        metadata: crds::ObjectMeta::named("e1"),
        spec: json!({
            "involvedObject": {"kind": "Package", "name": "nextcloud", "uid": live.metadata.uid},
            "type": "Warning", "reason": "InvalidFile", "message": message,
            "reportingController": "store", "count": 1,
            "firstTimestamp": Utc::now(), "lastTimestamp": Utc::now(),
        }),
        status: None,
    };
    store.create(event, &WriteOptions::default()).await.unwrap();

    let text = describe(&store, "pkg", "nextcloud", Utc::now())
        .await
        .unwrap();
    assert_inert(&text);
    // The event itself: its spec is printed as YAML.
    assert_inert(&describe(&store, "event", "e1", Utc::now()).await.unwrap());
    assert!(
        text.contains("\\u{1b}[2J") && !text.contains("\nforged: line"),
        "{text}"
    );
    for format in [Some(OutputFormat::Wide), Some(OutputFormat::Json), None] {
        for kind in ["events", "packages"] {
            let mut out = Vec::new();
            let args = GetArgs {
                kind: kind.into(),
                name: None,
                output: format,
                selector: None,
                watch: false,
            };
            get::run(&store, &args, &mut out, std::future::pending())
                .await
                .unwrap();
            assert_inert(&String::from_utf8(out).unwrap());
        }
    }
    let err = startbox::cli::for_terminal(anyhow::anyhow!("cannot read {HOSTILE}.yaml"));
    assert_inert(&format!("{err:#}"));
}

#[tokio::test]
async fn diff_of_a_secret_says_a_value_changed_without_showing_it() {
    let store = MemoryStore::default();
    let secret = |password: &str| {
        format!(
            "apiVersion: startos.dev/v1alpha1\nkind: Secret\nmetadata: {{name: db}}\nspec:\n  data: {{password: {password}, user: admin}}\n"
        )
    };
    apply_text(&store, &secret("first-Pw-1")).await;
    assert_eq!(
        diff_documents(&store, docs(&secret("first-Pw-1")))
            .await
            .unwrap(),
        ""
    );
    let diff = diff_documents(&store, docs(&secret("second-Pw-2")))
        .await
        .unwrap();
    assert!(
        diff.contains("-    password: <redacted>")
            && diff.contains("+    password: <changed, value hidden>"),
        "{diff}"
    );
    assert!(!diff.contains("user: <changed"), "{diff}");
    assert!(!diff.contains("-Pw-"), "no value is shown: {diff}");
    let dry = apply_object(&store, docs(&secret("second-Pw-2")).remove(0).object, true)
        .await
        .unwrap();
    assert_eq!(dry.outcome, Outcome::Configured);
    // The marker is an answer, never a value: applying a dry run's output is refused.
    let err = apply_object(
        &store,
        docs(&secret("'<changed, value hidden>'")).remove(0).object,
        false,
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("spec.data.password"), "{err:#}");
    assert_eq!(
        diff_documents(&store, docs(&secret("first-Pw-1")))
            .await
            .unwrap(),
        "",
        "nothing was applied"
    );
}
