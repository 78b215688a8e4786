//! The action controller against a recording fake of LXC (the real kernel is
//! `action_real.rs`'s job): the checks made before a command runs, what a finished command
//! leaves in the run's status, at-most-once, one run per package, tasks cleared on success,
//! retention, and that the input never shows in a condition, an event or a log line. The
//! archive is real, packed with `s9pk::ArchiveBuilder` into a temporary data directory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use controllers::{
    action::{self, ActionController},
    container::Host,
    layout::Layout,
    runtime::{Cache, Context, Reconciler, Recorder, Requeue},
};
use crds::{API_VERSION, Object, ObjectMeta, condition::find_condition, kind_by_name};
use host::lxc::{ContainerSpec, ExecOutput, FakeLxc, Limits, Lxc, LxcCall, LxcError, LxcOp};
use serde_json::{Value, json};
use store::{Clock, EngineConfig, MemoryStore, Store, WriteOptions};

/// Stands for a password in every input: it must never leave the run's spec.
const SECRET: &str = "pa55-w0rd-never-shown";

fn manifest() -> Value {
    let greeting_schema = json!({
        "type": "object",
        "required": ["greeting"],
        "properties": {"greeting": {"type": "string", "minLength": 1, "maxLength": 200}},
    });
    let action = |extra: Value| {
        let mut a = json!({
            "name": "An action", "description": "Does a thing.",
            "image": "main", "command": ["sh", "-c", "cat"],
            "env": {"MODE": "test"},
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            a[k] = v;
        }
        a
    };
    json!({
        "id": "hello",
        "title": "Hello",
        "version": "1.0.0:0",
        "license": "MIT",
        "description": {"short": "hi", "long": "Hello."},
        "arch": [std::env::consts::ARCH],
        "images": {"main": {}},
        "volumes": ["data"],
        "daemons": {"main": {"image": "main", "command": ["httpd", "-f"]}},
        "actions": {
            "set-greeting": action(json!({"input": greeting_schema})),
            "set-password": action(json!({
                "input": {"type": "object", "required": ["password"],
                          "properties": {"password": {"type": "string", "minLength": 12}}},
                "allowedStatuses": "only-running",
            })),
            "no-input": action(json!({})),
            "off": action(json!({"visibility": "disabled"})),
            "offline": action(json!({"allowedStatuses": "only-stopped"})),
        },
    })
}

fn install_archive(layout: &Layout) -> Result<String> {
    let arch = std::env::consts::ARCH;
    let mut b = s9pk::ArchiveBuilder::new();
    b.add_bytes("manifest.json", serde_json::to_vec(&manifest())?)?;
    b.add_bytes(&format!("images/{arch}/main.squashfs"), vec![0x5a; 5000])?;
    b.add_bytes(
        &format!("images/{arch}/main.json"),
        br#"{"env":{"PATH":"/bin"}}"#.to_vec(),
    )?;
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

/// How the package looks when a run is reconciled.
#[derive(Clone, Copy, Debug, PartialEq)]
enum PackageState {
    Missing,
    NotInstalled,
    Running,
    /// Installed, `running: false`: its daemons stopped, its container up and idle.
    Idle,
    /// Installed, its container stopped.
    Stopped,
}

struct Rig {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    lxc: Arc<FakeLxc>,
    controller: ActionController,
    ctx: Context,
    root_hash: String,
}

fn kind(name: &str) -> &'static crds::KindInfo {
    kind_by_name(name).expect("a known kind")
}

impl Rig {
    async fn new(state: PackageState) -> Result<Rig> {
        Self::with_clock(state, Clock::system()).await
    }

    async fn with_clock(state: PackageState, clock: Clock) -> Result<Rig> {
        let dir = tempfile::tempdir()?;
        let layout = Layout::new(dir.path());
        let root_hash = install_archive(&layout)?;
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(EngineConfig::default()));
        let lxc = Arc::new(FakeLxc::new());
        let host = Host {
            layout,
            lxc: lxc.clone(),
            mounter: Arc::new(host::mount::FakeMounter::new()),
            prefix: "t-".into(),
            bridge: "tbr0".into(),
            bridge_cidr: "10.77.0.1/24".parse()?,
            ids: host::idmap::IdRanges::default(),
            start_container: dir.path().join("start-container"),
        };
        let ctx = Context {
            store: store.clone(),
            cache: Cache::default(),
            events: Recorder::new(store.clone(), action::NAME, clock.clone()),
            controller: action::NAME,
            clock,
        };
        let rig = Rig {
            _dir: dir,
            store,
            lxc,
            controller: ActionController::new(Arc::new(host)),
            ctx,
            root_hash,
        };
        rig.set_package(state).await?;
        Ok(rig)
    }

    async fn set_package(&self, state: PackageState) -> Result<()> {
        if state == PackageState::Missing {
            return Ok(());
        }
        let pkg = self
            .store
            .create(
                object(
                    "Package",
                    "hello",
                    json!({"source": {"registry": "default"}}),
                ),
                &WriteOptions::default(),
            )
            .await?;
        if state == PackageState::NotInstalled {
            return Ok(());
        }
        let mut pkg = pkg;
        pkg.status = Some(json!({"rootHash": self.root_hash}));
        self.store
            .update_status(pkg, &WriteOptions::default())
            .await?;
        let running = state == PackageState::Running;
        let mut c = self
            .store
            .create(
                object(
                    "Container",
                    "hello",
                    json!({"package": "hello", "rootHash": self.root_hash, "running": running}),
                ),
                &WriteOptions::default(),
            )
            .await?;
        let (status, reason) = if running {
            ("True", "Running")
        } else {
            ("False", "Stopped")
        };
        let up = state != PackageState::Stopped;
        c.status = Some(
            json!({"state": if up { "RUNNING" } else { "STOPPED" }, "conditions": [{
                "type": "Running", "status": status, "reason": reason, "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }]}),
        );
        self.store
            .update_status(c, &WriteOptions::default())
            .await?;
        self.lxc.create(&lxc_spec()).await?;
        if up {
            self.lxc.start("t-hello").await?;
        }
        Ok(())
    }

    async fn create_run(&self, name: &str, action: &str, input: Value) -> Result<()> {
        let mut spec = json!({"package": "hello", "action": action});
        if !input.is_null() {
            spec["input"] = input;
        }
        self.store
            .create(object("ActionRun", name, spec), &WriteOptions::default())
            .await?;
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Object> {
        Ok(self.store.get(kind("ActionRun"), name).await?)
    }

    async fn reconcile(&self, name: &str) -> Result<Requeue> {
        let obj = self.get(name).await?;
        self.controller
            .reconcile(Arc::new(obj), &self.ctx)
            .await
            .map_err(|e| anyhow::anyhow!("reconcile {name}: {e}"))
    }

    /// The exec requests made so far.
    fn execs(&self) -> Vec<host::lxc::ExecRequest> {
        self.lxc
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                LxcCall::Exec(_, r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Every object in the store as JSON, but the runs' specs (which hold the input).
    async fn everything(&self) -> Result<String> {
        let mut all = String::new();
        for k in crds::kinds() {
            for mut o in self.store.list(k).await?.items {
                if o.kind == "ActionRun" {
                    o.spec = Value::Null;
                }
                all.push_str(&serde_json::to_string(&o)?);
            }
        }
        Ok(all)
    }
}

fn object(kind: &str, name: &str, spec: Value) -> Object {
    Object {
        api_version: API_VERSION.into(),
        kind: kind.into(),
        metadata: ObjectMeta::named(name),
        spec,
        status: None,
    }
}

fn lxc_spec() -> ContainerSpec {
    ContainerSpec {
        name: "t-hello".into(),
        rootfs: "/r".into(),
        init: vec!["/init".into()],
        idmap: None,
        network: None,
        limits: Limits::default(),
        mounts: Vec::new(),
        security: Default::default(),
    }
}

fn condition(obj: &Object, t: &str) -> String {
    find_condition(&obj.conditions(), t)
        .map(|c| format!("{:?}/{}", c.status, c.reason))
        .unwrap_or_default()
}

fn message(obj: &Object, t: &str) -> String {
    find_condition(&obj.conditions(), t)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn status(obj: &Object, field: &str) -> Value {
    obj.status
        .as_ref()
        .map(|s| s[field].clone())
        .unwrap_or(Value::Null)
}

fn exited(code: i32, stdout: &str, stderr: &str) -> ExecOutput {
    ExecOutput {
        code: Some(code),
        stdout: stdout.into(),
        stderr: stderr.into(),
        stdout_truncated: false,
    }
}

struct Case {
    name: &'static str,
    package: PackageState,
    action: &'static str,
    input: Value,
    exec: Option<ExecOutput>,
    complete: &'static str,
    failed: &'static str,
    /// A part of the `Complete` message.
    says: &'static str,
    ran: bool,
}

#[tokio::test]
async fn a_run_is_checked_then_run_once_and_its_outcome_recorded() -> Result<()> {
    let ok = || Some(exited(0, r#"{"message":"done"}"#, ""));
    let greeting = || json!({"greeting": "Hi"});
    use PackageState::*;
    let cases = [
        Case {
            name: "success",
            package: Running,
            action: "set-greeting",
            input: greeting(),
            exec: ok(),
            complete: "True/Complete",
            failed: "",
            says: "completed",
            ran: true,
        },
        Case {
            name: "bad-input",
            package: Running,
            action: "set-greeting",
            input: json!({"greeting": ""}),
            exec: ok(),
            complete: "False/InputInvalid",
            failed: "True/InputInvalid",
            says: "spec.input/greeting: ",
            ran: false,
        },
        Case {
            name: "missing-input",
            package: Running,
            action: "set-greeting",
            input: Value::Null,
            exec: ok(),
            complete: "False/InputInvalid",
            failed: "True/InputInvalid",
            says: "spec.input: ",
            ran: false,
        },
        Case {
            name: "input-for-no-input",
            package: Running,
            action: "no-input",
            input: json!({"a": 1}),
            exec: ok(),
            complete: "False/InputInvalid",
            failed: "True/InputInvalid",
            says: "takes no input",
            ran: false,
        },
        Case {
            name: "no-input",
            package: Running,
            action: "no-input",
            input: Value::Null,
            exec: Some(exited(0, "", "")),
            complete: "True/Complete",
            failed: "",
            says: "completed",
            ran: true,
        },
        Case {
            name: "unknown-action",
            package: Running,
            action: "nope",
            input: Value::Null,
            exec: ok(),
            complete: "False/ActionNotFound",
            failed: "True/ActionNotFound",
            says: "package \"hello\" has no action \"nope\" (it has: no-input, off, offline, set-greeting, set-password)",
            ran: false,
        },
        Case {
            name: "disabled",
            package: Running,
            action: "off",
            input: Value::Null,
            exec: ok(),
            complete: "False/ActionDisabled",
            failed: "True/ActionDisabled",
            says: "is disabled",
            ran: false,
        },
        Case {
            name: "no-package",
            package: Missing,
            action: "no-input",
            input: Value::Null,
            exec: ok(),
            complete: "False/PackageNotFound",
            failed: "True/PackageNotFound",
            says: "package \"hello\" does not exist",
            ran: false,
        },
        Case {
            name: "not-installed",
            package: NotInstalled,
            action: "no-input",
            input: Value::Null,
            exec: ok(),
            complete: "False/PackageNotInstalled",
            failed: "True/PackageNotInstalled",
            says: "not installed",
            ran: false,
        },
        Case {
            name: "only-running",
            package: Stopped,
            action: "set-password",
            input: json!({"password": SECRET}),
            exec: ok(),
            complete: "False/NotAllowedNow",
            failed: "True/NotAllowedNow",
            says: "cannot run while the package's container is not up",
            ran: false,
        },
        Case {
            name: "only-running-idle",
            package: Idle,
            action: "set-password",
            input: json!({"password": SECRET}),
            exec: ok(),
            complete: "False/NotAllowedNow",
            failed: "True/NotAllowedNow",
            says: "may only run while the package is running, and it is stopped",
            ran: false,
        },
        Case {
            name: "only-stopped",
            package: Stopped,
            action: "offline",
            input: Value::Null,
            exec: ok(),
            complete: "False/NotAllowedNow",
            failed: "True/NotAllowedNow",
            says: "cannot run while the package's container is not up",
            ran: false,
        },
        // `running: false` (or a critical task holding the package back) leaves the
        // container up: its actions run there.
        Case {
            name: "only-stopped-idle",
            package: Idle,
            action: "offline",
            input: Value::Null,
            exec: Some(exited(0, "", "")),
            complete: "True/Complete",
            failed: "",
            says: "completed",
            ran: true,
        },
        Case {
            name: "any-idle",
            package: Idle,
            action: "no-input",
            input: Value::Null,
            exec: Some(exited(0, "", "")),
            complete: "True/Complete",
            failed: "",
            says: "completed",
            ran: true,
        },
        Case {
            name: "only-stopped-running",
            package: Running,
            action: "offline",
            input: Value::Null,
            exec: ok(),
            complete: "False/NotAllowedNow",
            failed: "True/NotAllowedNow",
            says: "may only run while the package is stopped",
            ran: false,
        },
        Case {
            name: "exit-3",
            package: Running,
            action: "set-password",
            input: json!({"password": SECRET}),
            exec: Some(exited(3, "", "starting\nradicale: bad htpasswd file\n")),
            complete: "False/CommandFailed",
            failed: "True/CommandFailed",
            says: "the command exited with exit code 3; the end of its stderr:\nstarting\nradicale: bad htpasswd file",
            ran: true,
        },
        Case {
            name: "big-stdout",
            package: Running,
            action: "no-input",
            input: Value::Null,
            exec: Some(exited(
                0,
                &format!("{{\"a\":\"{}\"}}", "x".repeat(70_000)),
                "",
            )),
            complete: "False/ResultInvalid",
            failed: "True/ResultInvalid",
            says: "more than 64 KiB",
            ran: true,
        },
        Case {
            name: "not-json",
            package: Running,
            action: "no-input",
            input: Value::Null,
            exec: Some(exited(0, "done!", "")),
            complete: "False/ResultInvalid",
            failed: "True/ResultInvalid",
            says: "not a JSON object",
            ran: true,
        },
    ];
    let mut failures = Vec::new();
    for case in cases {
        let got = run_case(&case).await;
        if let Err(e) = got {
            failures.push(format!("{}: {e:#}", case.name));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

async fn run_case(case: &Case) -> Result<()> {
    let rig = Rig::new(case.package).await?;
    if let Some(out) = &case.exec {
        rig.lxc.push_exec_result(out.clone());
    }
    rig.create_run("run", case.action, case.input.clone())
        .await?;
    let requeue = rig.reconcile("run").await?;
    ensure!(requeue == Requeue::After(action::RETENTION), "{requeue:?}");
    let obj = rig.get("run").await?;
    ensure!(
        condition(&obj, "Complete") == case.complete,
        "Complete: {:#?}",
        obj.status
    );
    ensure!(
        condition(&obj, "Failed") == case.failed,
        "Failed: {:#?}",
        obj.status
    );
    let says = message(&obj, "Complete");
    ensure!(says.contains(case.says), "message {says:?}");
    ensure!(
        !status(&obj, "completionTime").is_null(),
        "no completionTime"
    );
    ensure!(status(&obj, "startTime").is_null() != case.ran, "startTime");
    let execs = rig.execs();
    ensure!(execs.len() == usize::from(case.ran), "execs: {execs:?}");
    if case.complete == "True/Complete" && case.exec.as_ref().is_some_and(|o| !o.stdout.is_empty())
    {
        ensure!(
            status(&obj, "result") == json!({"message": "done"}),
            "{:?}",
            obj.status
        );
    }
    // Owned by its package, so runs go with it.
    if case.package != PackageState::Missing {
        let owner = obj.metadata.owner_references.first().context("an owner")?;
        ensure!(owner.kind == "Package" && owner.name == "hello" && !owner.controller);
    }
    // A second reconcile runs nothing and writes nothing.
    let rv = obj.metadata.resource_version.clone();
    rig.reconcile("run").await?;
    ensure!(rig.execs().len() == usize::from(case.ran), "ran twice");
    ensure!(
        rig.get("run").await?.metadata.resource_version == rv,
        "wrote again"
    );
    ensure!(
        !rig.everything().await?.contains(SECRET),
        "the input leaked"
    );
    Ok(())
}

#[tokio::test]
async fn the_command_gets_its_argv_env_and_the_input_on_stdin() -> Result<()> {
    let rig = Rig::new(PackageState::Running).await?;
    rig.create_run("run", "set-greeting", json!({"greeting": "Hi"}))
        .await?;
    rig.reconcile("run").await?;
    let calls = rig.lxc.calls();
    let (name, request) = calls
        .iter()
        .find_map(|c| match c {
            LxcCall::Exec(n, r) => Some((n.clone(), r.clone())),
            _ => None,
        })
        .context("an exec")?;
    assert_eq!(name, "t-hello");
    assert_eq!(request.argv.last().map(String::as_str), Some("cat"));
    assert_eq!(request.argv[1], "exec-in");
    assert_eq!(request.env["MODE"], "test");
    assert_eq!(request.env["PATH"], "/bin");
    assert_eq!(request.stdin, br#"{"greeting":"Hi"}"#);
    assert_eq!(request.timeout, action::TIMEOUT);
    Ok(())
}

#[tokio::test]
async fn a_run_found_started_but_unfinished_is_interrupted_and_never_run() -> Result<()> {
    let rig = Rig::new(PackageState::Running).await?;
    rig.create_run("run", "no-input", Value::Null).await?;
    let mut obj = rig.get("run").await?;
    obj.status = Some(json!({"startTime": "2026-01-01T00:00:00Z"}));
    rig.store
        .update_status(obj, &WriteOptions::default())
        .await?;
    rig.reconcile("run").await?;
    let obj = rig.get("run").await?;
    assert_eq!(condition(&obj, "Failed"), "True/Interrupted");
    assert_eq!(condition(&obj, "Complete"), "False/Interrupted");
    assert!(rig.execs().is_empty());
    Ok(())
}

#[tokio::test]
async fn an_outcome_whose_write_failed_is_recorded_by_the_retry_not_rerun() -> Result<()> {
    let rig = Rig::new(PackageState::Running).await?;
    // Someone labels the run while its command runs: recording the outcome conflicts.
    let lxc = Arc::new(GatedLxc {
        inner: rig.lxc.clone(),
        gate: None,
        edit: Some(rig.store.clone()),
        entered: tokio::sync::Notify::new(),
    });
    let controller = ActionController::new(Arc::new(Host {
        lxc,
        ..test_host(&rig)
    }));
    rig.lxc.push_exec_result(exited(0, r#"{"ok":true}"#, ""));
    rig.create_run("run", "no-input", Value::Null).await?;
    let obj = rig.get("run").await?;
    let r = controller.reconcile(Arc::new(obj), &rig.ctx).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(
        condition(&rig.get("run").await?, "Complete"),
        "False/Started"
    );
    let obj = rig.get("run").await?;
    controller.reconcile(Arc::new(obj), &rig.ctx).await?;
    let obj = rig.get("run").await?;
    assert_eq!(condition(&obj, "Complete"), "True/Complete");
    assert_eq!(status(&obj, "result"), json!({"ok": true}));
    assert_eq!(rig.execs().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_finished_run_ignores_spec_changes() -> Result<()> {
    let rig = Rig::new(PackageState::Running).await?;
    rig.create_run("run", "set-greeting", json!({"greeting": "Hi"}))
        .await?;
    rig.reconcile("run").await?;
    let mut obj = rig.get("run").await?;
    obj.spec["input"] = json!({"greeting": "Again"});
    rig.store.update(obj, &WriteOptions::default()).await?;
    rig.reconcile("run").await?;
    let obj = rig.get("run").await?;
    assert_eq!(rig.execs().len(), 1);
    assert!(
        message(&obj, "Complete").contains("the spec changed after the run started and is ignored"),
        "{:?}",
        obj.status
    );
    let conditions = obj.conditions();
    let c = find_condition(&conditions, "Complete").context("Complete")?;
    assert_eq!(c.observed_generation, obj.metadata.generation);
    let rv = obj.metadata.resource_version.clone();
    rig.reconcile("run").await?;
    assert_eq!(rig.get("run").await?.metadata.resource_version, rv);
    Ok(())
}

#[tokio::test]
async fn success_deletes_the_packages_tasks_for_that_action_only() -> Result<()> {
    let rig = Rig::new(PackageState::Running).await?;
    for (name, pkg, action) in [
        ("hello-set-greeting", "hello", "set-greeting"),
        ("hello-set-password", "hello", "set-password"),
        ("other-set-greeting", "other", "set-greeting"),
    ] {
        let spec = json!({"package": pkg, "action": action, "severity": "important"});
        rig.store
            .create(object("Task", name, spec), &WriteOptions::default())
            .await?;
    }
    // A failed run clears nothing.
    rig.lxc.push_exec_result(exited(1, "", "no"));
    rig.create_run("fails", "set-greeting", json!({"greeting": "Hi"}))
        .await?;
    rig.reconcile("fails").await?;
    assert_eq!(rig.store.list(kind("Task")).await?.items.len(), 3);
    rig.create_run("run", "set-greeting", json!({"greeting": "Hi"}))
        .await?;
    rig.reconcile("run").await?;
    let left: Vec<String> = rig
        .store
        .list(kind("Task"))
        .await?
        .items
        .into_iter()
        .map(|t| t.metadata.name)
        .collect();
    assert_eq!(left, ["hello-set-password", "other-set-greeting"]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn finished_runs_are_deleted_after_the_retention() -> Result<()> {
    let start = "2026-03-01T12:00:00Z".parse()?;
    let rig = Rig::with_clock(PackageState::Running, Clock::following_tokio(start)).await?;
    rig.create_run("run", "no-input", Value::Null).await?;
    assert_eq!(
        rig.reconcile("run").await?,
        Requeue::After(action::RETENTION)
    );
    tokio::time::advance(Duration::from_secs(600)).await;
    assert_eq!(
        rig.reconcile("run").await?,
        Requeue::After(action::RETENTION - Duration::from_secs(600))
    );
    tokio::time::advance(action::RETENTION).await;
    assert_eq!(rig.reconcile("run").await?, Requeue::OnChange);
    assert!(rig.get("run").await.is_err(), "deleted");
    Ok(())
}

#[tokio::test]
async fn a_package_runs_one_action_at_a_time() -> Result<()> {
    let rig = Arc::new(Rig::new(PackageState::Running).await?);
    // The first command blocks until the test lets it go.
    let gate = Arc::new(tokio::sync::Notify::new());
    let lxc = Arc::new(GatedLxc {
        inner: rig.lxc.clone(),
        gate: Some(gate.clone()),
        edit: None,
        entered: tokio::sync::Notify::new(),
    });
    let host = Host {
        lxc: lxc.clone(),
        ..test_host(&rig)
    };
    let controller = ActionController::new(Arc::new(host));
    rig.create_run("first", "no-input", Value::Null).await?;
    rig.create_run("second", "no-input", Value::Null).await?;
    let first = {
        let (rig, controller) = (rig.clone(), controller.clone());
        tokio::spawn(async move {
            let obj = rig.get("first").await?;
            controller
                .reconcile(Arc::new(obj), &rig.ctx)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
    };
    tokio::time::timeout(Duration::from_secs(10), lxc.entered.notified()).await?;
    let obj = rig.get("second").await?;
    let r = controller.reconcile(Arc::new(obj), &rig.ctx).await;
    assert!(matches!(r, Ok(Requeue::After(_))), "{r:?}");
    let second = rig.get("second").await?;
    assert_eq!(condition(&second, "Complete"), "False/WaitingForAction");
    assert!(message(&second, "Complete").contains("waiting for ActionRun \"first\""));
    assert_eq!(
        rig.get("first").await.map(|o| condition(&o, "Complete"))?,
        "False/Started"
    );
    gate.notify_one();
    first.await??;
    let obj = rig.get("second").await?;
    controller.reconcile(Arc::new(obj), &rig.ctx).await?;
    assert_eq!(
        condition(&rig.get("second").await?, "Complete"),
        "True/Complete"
    );
    assert_eq!(rig.execs().len(), 2);
    Ok(())
}

fn test_host(rig: &Rig) -> Host {
    Host {
        layout: Layout::new(rig._dir.path()),
        lxc: rig.lxc.clone(),
        mounter: Arc::new(host::mount::FakeMounter::new()),
        prefix: "t-".into(),
        bridge: "tbr0".into(),
        bridge_cidr: "10.77.0.1/24".parse().expect("a cidr"),
        ids: host::idmap::IdRanges::default(),
        start_container: rig._dir.path().join("start-container"),
    }
}

/// The fake, with the first exec held until the gate opens, or the run labelled while
/// the exec runs.
struct GatedLxc {
    inner: Arc<FakeLxc>,
    gate: Option<Arc<tokio::sync::Notify>>,
    edit: Option<Arc<dyn Store>>,
    entered: tokio::sync::Notify,
}

impl std::fmt::Debug for GatedLxc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatedLxc")
    }
}

#[async_trait::async_trait]
impl Lxc for GatedLxc {
    async fn create(&self, spec: &ContainerSpec) -> Result<(), LxcError> {
        self.inner.create(spec).await
    }
    async fn start(&self, name: &str) -> Result<(), LxcError> {
        self.inner.start(name).await
    }
    async fn stop(&self, name: &str, mode: host::lxc::StopMode) -> Result<(), LxcError> {
        self.inner.stop(name, mode).await
    }
    async fn destroy(&self, name: &str) -> Result<(), LxcError> {
        self.inner.destroy(name).await
    }
    async fn state(&self, name: &str) -> Result<Option<host::lxc::State>, LxcError> {
        self.inner.state(name).await
    }
    async fn list(&self) -> Result<Vec<String>, LxcError> {
        self.inner.list().await
    }
    async fn info(&self, name: &str) -> Result<host::lxc::Info, LxcError> {
        self.inner.info(name).await
    }
    async fn signal(&self, name: &str, signal: host::lxc::Signal) -> Result<(), LxcError> {
        self.inner.signal(name, signal).await
    }
    async fn exec(
        &self,
        name: &str,
        request: &host::lxc::ExecRequest,
    ) -> Result<ExecOutput, LxcError> {
        let first = self
            .inner
            .calls()
            .iter()
            .all(|c| !matches!(c, LxcCall::Exec(..)));
        let out = self.inner.exec(name, request).await;
        if let Some(store) = &self.edit {
            let mut obj = store.get(kind("ActionRun"), "run").await.expect("the run");
            obj.metadata.labels.insert("touched".into(), "yes".into());
            store
                .update(obj, &WriteOptions::default())
                .await
                .expect("labelled");
        }
        if let (true, Some(gate)) = (first, &self.gate) {
            self.entered.notify_one();
            gate.notified().await;
        }
        out
    }
}

#[tokio::test]
async fn a_command_that_cannot_be_run_fails_the_run() -> Result<()> {
    let rig = Rig::new(PackageState::Running).await?;
    rig.lxc.fail_next(
        LxcOp::Exec,
        LxcError::Command {
            container: "t-hello".into(),
            source: host::cmd::CommandError::Timeout {
                command: "lxc-attach".into(),
                seconds: 300,
            },
        },
    );
    rig.create_run("run", "no-input", Value::Null).await?;
    rig.reconcile("run").await?;
    let obj = rig.get("run").await?;
    assert_eq!(condition(&obj, "Failed"), "True/CommandFailed");
    assert_eq!(
        message(&obj, "Failed"),
        "the command did not finish within 300 s and was killed"
    );
    Ok(())
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("the log buffer")
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_input_never_reaches_a_log_line_a_condition_or_an_event() -> Result<()> {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rig = Rig::new(PackageState::Running).await?;
    let password = json!({"password": SECRET});
    // Refused by the schema (the secret in a value of the wrong type, a password too
    // short), failed, and succeeded.
    rig.create_run("bad", "set-password", json!({"password": [SECRET]}))
        .await?;
    rig.create_run("short", "set-password", json!({"password": "short-pw"}))
        .await?;
    rig.lxc
        .push_exec_result(exited(2, "", "htpasswd: failed\n"));
    rig.create_run("fails", "set-password", password.clone())
        .await?;
    rig.create_run("works", "set-password", password.clone())
        .await?;
    for run in ["bad", "short", "fails", "works"] {
        rig.reconcile(run).await?;
    }
    assert_eq!(
        condition(&rig.get("short").await?, "Failed"),
        "True/InputInvalid"
    );
    assert_eq!(
        condition(&rig.get("fails").await?, "Failed"),
        "True/CommandFailed"
    );
    assert_eq!(
        condition(&rig.get("works").await?, "Complete"),
        "True/Complete"
    );
    assert_eq!(
        condition(&rig.get("bad").await?, "Failed"),
        "True/InputInvalid"
    );
    let everything = rig.everything().await?;
    assert!(!everything.contains(SECRET), "{everything}");
    assert!(!everything.contains("short-pw"), "{everything}");
    let events = rig.store.list(kind("Event")).await?.items;
    assert!(events.len() >= 4, "{events:?}");
    let logs = String::from_utf8(logs.0.lock().expect("logs").clone())?;
    assert!(logs.contains("action started"), "{logs}");
    assert!(!logs.contains(SECRET), "{logs}");
    assert!(!logs.contains("short-pw"), "{logs}");
    Ok(())
}
