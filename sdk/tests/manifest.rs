//! The example manifest, serde round trips, and data-driven validation cases: each case
//! mutates the valid example and expects an error at a given field path.

use std::path::PathBuf;

use sdk::{Arch, ImageConfig, ImageSourceKind, Manifest, MountSource, Probe};
use serde_json::Value;

fn example_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/example.yaml");
    std::fs::read_to_string(path).unwrap()
}

fn example_value() -> Value {
    serde_saphyr::from_str(&example_text()).unwrap()
}

fn example() -> Manifest {
    serde_saphyr::from_str(&example_text()).unwrap()
}

#[test]
fn example_is_valid() {
    let m = example();
    m.validate().unwrap();
    assert_eq!(m.id, "gitea");
    assert_eq!(m.parsed_version().unwrap().to_string(), "1.22.3:1");
    assert_eq!(
        m.start_order().unwrap(),
        ["chown", "db", "web", "ssh"],
        "requires first"
    );
    assert_eq!(m.health_checks().collect::<Vec<_>>(), ["db", "ssh", "web"]);
    assert_eq!(m.image_arch("main").unwrap(), [Arch::X86_64, Arch::Aarch64]);

    let main = &m.images["main"];
    let src = main.source.as_ref().unwrap();
    assert_eq!(
        src.for_arch(Arch::Aarch64).unwrap(),
        (ImageSourceKind::Tarball, "images/gitea-aarch64.tar".into())
    );
    let pg = m.images["postgres"].source.as_ref().unwrap();
    assert_eq!(
        pg.for_arch(Arch::X86_64).unwrap().0,
        ImageSourceKind::Squashfs
    );
    assert_eq!(
        pg.for_arch(Arch::Aarch64).unwrap().0,
        ImageSourceKind::Directory
    );
    assert_eq!(pg.for_arch(Arch::Riscv64), None);

    let config = main.config();
    assert_eq!(
        config.argv(m.daemons["web"].command.as_deref()),
        ["/usr/bin/entrypoint", "/bin/s6-svscan", "/etc/s6"]
    );
    assert_eq!(
        config.argv(m.daemons["ssh"].command.as_deref())[0],
        "/usr/bin/gitea-ssh"
    );
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["workdir"], "/var/lib/gitea");
    assert_eq!(serde_json::from_value::<ImageConfig>(json).unwrap(), config);

    let web = &m.daemons["web"];
    assert!(matches!(web.ready.as_ref().unwrap().probe(), Some(Probe::Http(h)) if h.port == 3000));
    assert_eq!(web.ready.as_ref().unwrap().period_seconds, 10, "default");
    assert_eq!(web.mounts[1].source(), Some(MountSource::Assets));
    assert!(web.mounts[2].is_read_only());
    assert_eq!(
        web.mounts[2].source(),
        Some(MountSource::Dependency {
            package: "smtp-relay",
            volume: "certs"
        })
    );
}

#[test]
fn round_trips() {
    let m = example();
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
    let yaml = serde_saphyr::to_string(&m).unwrap();
    assert_eq!(serde_saphyr::from_str::<Manifest>(&yaml).unwrap(), m);
    // Defaults are filled in and survive the trip; the camelCase names are used.
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["actions"]["export-repos"]["visibility"], "hidden");
    assert_eq!(v["actions"]["set-admin-password"]["visibility"], "enabled");
    assert_eq!(v["interfaces"]["web-ui"]["hostTls"], true);
    assert_eq!(v["daemons"]["db"]["ready"]["graceSeconds"], 30);
}

#[test]
fn unknown_fields_and_values_are_rejected() {
    for (path, value) in [
        ("daemons.web.restart", "always"),
        ("daemons.web.ready.http.scheme", "https"),
        ("arch", "[arm]"),
        ("interfaces.ssh.protocol", "sctp"),
        ("actions.export-repos.allowedStatuses", "sometimes"),
        ("wrapper_repo", "https://x"),
    ] {
        let mut v = example_value();
        set(&mut v, path, Some(value));
        assert!(
            serde_json::from_value::<Manifest>(v).is_err(),
            "{path}: {value} was accepted"
        );
    }
}

#[test]
fn check_dependency_against_its_manifest() {
    let m = example();
    let mut relay = example();
    relay.id = "smtp-relay".into();
    relay.version = "2.4:0".into();
    relay.volumes = vec!["certs".into()];
    relay.daemons.remove("ssh");
    let err = m.check_dependency(&relay).unwrap_err().to_string();
    assert!(
        err.contains(
            "dependencies.smtp-relay.healthChecks[0]: smtp-relay has no health check \"smtp\""
        ),
        "{err}"
    );
    let smtp = relay.daemons["web"].clone();
    relay.daemons.insert("smtp".into(), smtp);
    m.check_dependency(&relay).unwrap();
    relay.version = "3.0:0".into();
    relay.volumes = vec!["data".into()];
    let err = m.check_dependency(&relay).unwrap_err().to_string();
    assert!(
        err.contains("dependencies.smtp-relay.versionRange"),
        "{err}"
    );
    assert!(
        err.contains("daemons.web.mounts[2].volume: smtp-relay has no volume \"certs\""),
        "{err}"
    );
    relay.id = "other".into();
    assert!(m.check_dependency(&relay).is_err());
}

/// Sets (or with `None` removes) the value at a dotted path like `daemons.web.mounts[0].path`;
/// the value is YAML.
fn set(root: &mut Value, path: &str, value: Option<&str>) {
    let mut segs: Vec<(String, Option<usize>)> = Vec::new();
    for s in path.split('.') {
        match s.split_once('[') {
            Some((k, i)) => segs.push((k.into(), Some(i.trim_end_matches(']').parse().unwrap()))),
            None => segs.push((s.into(), None)),
        }
    }
    let mut cur = root;
    let last = segs.len() - 1;
    for (n, (key, idx)) in segs.into_iter().enumerate() {
        let obj = cur
            .as_object_mut()
            .unwrap_or_else(|| panic!("{path}: not an object"));
        if n == last && idx.is_none() {
            match value {
                Some(y) => obj.insert(key, serde_saphyr::from_str(y).unwrap()),
                None => obj.remove(&key),
            };
            return;
        }
        let next = obj.entry(key).or_insert(Value::Object(Default::default()));
        cur = match idx {
            None => next,
            Some(i) => {
                let arr = next.as_array_mut().unwrap();
                if n == last {
                    match value {
                        Some(y) if i == arr.len() => arr.push(serde_saphyr::from_str(y).unwrap()),
                        Some(y) => arr[i] = serde_saphyr::from_str(y).unwrap(),
                        None => {
                            arr.remove(i);
                        }
                    }
                    return;
                }
                &mut arr[i]
            }
        };
    }
}

type Mutation = (&'static str, Option<&'static str>);

/// (mutations applied to the example, expected error path, expected message part).
#[rustfmt::skip]
const CASES: &[(&[Mutation], &str, &str)] = &[
    // References.
    (&[("daemons.web.image", Some("mian"))], "daemons.web.image", "unknown image \"mian\" (known: main, postgres)"),
    (&[("oneshots.chown.image", Some("busybox"))], "oneshots.chown.image", "unknown image \"busybox\""),
    (&[("daemons.web.mounts[0].volume", Some("data"))], "daemons.web.mounts[0].volume", "unknown volume \"data\" (known: main, db)"),
    (&[("daemons.web.requires[1]", Some("dbb"))], "daemons.web.requires[1]", "unknown daemon or oneshot \"dbb\" (known: chown, db, ssh, web)"),
    (&[("daemons.web.requires[2]", Some("db"))], "daemons.web.requires[2]", "listed twice"),
    (&[("tasks[0].action", Some("set-password"))], "tasks[0].action", "unknown action \"set-password\" (known: export-repos, set-admin-password)"),
    (&[("interfaces.web-ui.daemon", Some("webb"))], "interfaces.web-ui.daemon", "unknown daemon \"webb\""),
    (&[("daemons.web.mounts[2].dependency", Some("mailer"))], "daemons.web.mounts[2].dependency", "unknown dependency \"mailer\""),
    (&[("actions.export-repos.image", Some("x"))], "actions.export-repos.image", "unknown image"),
    (&[("actions.export-repos.mounts[0].volume", Some("x"))], "actions.export-repos.mounts[0].volume", "unknown volume"),
    (&[("backup.volumes[1]", Some("logs"))], "backup.volumes[1]", "unknown volume \"logs\""),
    (&[("backup.preHook.image", Some("pg"))], "backup.preHook.image", "unknown image \"pg\""),
    (&[("backup.postHook.mounts[0].volume", Some("tmp"))], "backup.postHook.mounts[0].volume", "unknown volume"),
    (&[("migrations[0].up.image", Some("nope"))], "migrations[0].up.image", "unknown image"),
    (&[("migrations[1].down.command", Some("[]"))], "migrations[1].down.command", "must not be empty"),
    // Health checks.
    (&[("dependencies.postgres-tools.healthChecks", Some("[ready]"))], "dependencies.postgres-tools.healthChecks", "only apply to kind: running"),
    (&[("dependencies.smtp-relay.kind", Some("exists"))], "dependencies.smtp-relay.healthChecks", "only apply to kind: running"),
    (&[("dependencies.smtp-relay.healthChecks[1]", Some("smtp"))], "dependencies.smtp-relay.healthChecks[1]", "listed twice"),
    (&[("dependencies.smtp-relay.healthChecks[0]", Some("SMTP"))], "dependencies.smtp-relay.healthChecks[0]", "invalid id"),
    // Cycles.
    (&[("daemons.db.requires", Some("[ssh]"))], "daemons.db.requires", "requires cycle: db -> ssh -> web -> db"),
    (&[("daemons.web.requires", Some("[web]"))], "daemons.web.requires", "requires cycle: web -> web"),
    (&[("oneshots.chown.requires", Some("[web]"))], "oneshots.chown.requires", "requires cycle: chown -> web -> chown"),
    (&[("oneshots.db", Some("{image: main, command: [\"true\"]}"))], "oneshots.db", "also a daemon id"),
    // Ids.
    (&[("id", Some("Gitea"))], "id", "invalid id"),
    (&[("daemons.Web", Some("{image: main}"))], "daemons.Web", "invalid id"),
    (&[("images.main_2", Some("{cmd: [x]}"))], "images.main_2", "invalid id"),
    (&[("interfaces.-x", Some("{name: X, type: ui, internalPort: 80, protocol: http}"))], "interfaces.-x", "invalid id"),
    (&[("actions.Reset", Some("{name: R, description: D, image: main, command: [x]}"))], "actions.Reset", "invalid id"),
    (&[("volumes", Some("[main, db, main]"))], "volumes[2]", "duplicate volume id \"main\""),
    (&[("volumes[2]", Some("Logs"))], "volumes[2]", "invalid id"),
    (&[("dependencies.gitea", Some("{kind: exists, versionRange: \"*\"}"))], "dependencies.gitea", "cannot depend on itself"),
    // Architectures.
    (&[("images.postgres.arch", Some("[x86_64, riscv64]"))], "images.postgres.arch[1]", "riscv64 is not in the manifest's arch (x86_64, aarch64)"),
    (&[("hardwareRequirements.arch", Some("[riscv64]"))], "hardwareRequirements.arch[0]", "not in the manifest's arch"),
    (&[("arch", Some("[]"))], "arch", "at least one"),
    (&[("arch", Some("[x86_64, aarch64, x86_64]"))], "arch", "twice"),
    (&[("images.postgres.source.x86_64", None)], "images.postgres.source.x86_64", "no source for x86_64"),
    (&[("images.main.arch", Some("[x86_64]")), ("images.main.source", Some("{aarch64: {tarball: a.tar}}"))], "images.main.source.aarch64", "not built for aarch64"),
    (&[("images.main.source", Some("{tarball: a.tar, directory: b}"))], "images.main.source", "only one of"),
    (&[("images.main.source.tarball", Some("/abs/x.tar"))], "images.main.source.tarball", "relative path"),
    (&[("images.postgres.source.aarch64", Some("{}"))], "images.postgres.source.aarch64", "exactly one of"),
    // Probes.
    (&[("daemons.web.ready.http.port", Some("70000"))], "daemons.web.ready.http.port", "port 70000 is not in 1..=65535"),
    (&[("daemons.ssh.ready.tcp.port", Some("0"))], "daemons.ssh.ready.tcp.port", "not in 1..=65535"),
    (&[("daemons.web.ready.http.path", Some("healthz"))], "daemons.web.ready.http.path", "must start with '/'"),
    (&[("daemons.db.ready.exec.command", Some("[]"))], "daemons.db.ready.exec.command", "must not be empty"),
    (&[("daemons.web.ready.tcp", Some("{port: 3000}"))], "daemons.web.ready", "exactly one of http, tcp, exec"),
    (&[("daemons.web.ready.periodSeconds", Some("0"))], "daemons.web.ready.periodSeconds", "at least 1"),
    // Actions.
    (&[("actions.set-admin-password.input", Some("{type: string}"))], "actions.set-admin-password.input.type", "must be an object schema"),
    (&[("actions.set-admin-password.input", Some("[1]"))], "actions.set-admin-password.input", "JSON Schema object"),
    (&[("actions.set-admin-password.input.properties", Some("[a]"))], "actions.set-admin-password.input.properties", "must be an object"),
    (&[("actions.export-repos.command", Some("[]"))], "actions.export-repos.command", "must not be empty"),
    // Interfaces.
    (&[("interfaces.ssh.internalPort", Some("0"))], "interfaces.ssh.internalPort", "not in 1..=65535"),
    (&[("interfaces.ssh.protocol", Some("udp")), ("interfaces.ssh.hostTls", Some("true"))], "interfaces.ssh.hostTls", "cannot terminate TLS"),
    (&[("interfaces.web-ui.path", Some("admin"))], "interfaces.web-ui.path", "must start with '/'"),
    // Processes and mounts.
    (&[("daemons.web.env", Some("{1BAD: x}"))], "daemons.web.env.1BAD", "not a valid environment variable name"),
    (&[("daemons.web.workdir", Some("data"))], "daemons.web.workdir", "absolute path"),
    (&[("oneshots.chown.command", Some("[]"))], "oneshots.chown.command", "must not be empty"),
    (&[("images.main.entrypoint", None), ("images.main.cmd", None)], "daemons.web.command", "declares no entrypoint or cmd"),
    (&[("daemons.web.mounts[0].path", Some("data"))], "daemons.web.mounts[0].path", "absolute path"),
    (&[("daemons.web.mounts[1].path", Some("/data"))], "daemons.web.mounts[1].path", "mounted twice"),
    (&[("daemons.web.mounts[1].volume", Some("main"))], "daemons.web.mounts[1]", "set exactly one of"),
    (&[("daemons.web.mounts[1].readOnly", Some("true"))], "daemons.web.mounts[1].readOnly", "always read-only"),
    (&[("daemons.web.mounts[2].readOnly", Some("true"))], "daemons.web.mounts[2].readOnly", "always read-only"),
    // Versions and metadata.
    (&[("version", Some("1.22.3:x"))], "version", "invalid version"),
    (&[("version", Some("\"1.22.3\""))], "version", "must be written as upstream:downstream (e.g. \"1.22.3:0\")"),
    (&[("migrations[0].to", Some("\"1.21\""))], "migrations[0].to", "upstream:downstream"),
    (&[("dependencies.smtp-relay.versionRange", Some("\">=x\""))], "dependencies.smtp-relay.versionRange", "invalid version"),
    (&[("migrations[1].to", Some("2.0:0"))], "migrations[1].to", "newer than the package version 1.22.3:1"),
    (&[("migrations[0].from", Some("\"<=1.21\""))], "migrations[0].from", "includes the target version"),
    (&[("migrations[0].from", Some("\"~\""))], "migrations[0].from", "invalid version"),
    (&[("wrapperRepo", Some("ftp://example.com"))], "wrapperRepo", "not an http(s) URL"),
    (&[("description.short", Some("''"))], "description.short", "1 to 160 characters"),
    (&[("title", Some("' '"))], "title", "must not be empty"),
    (&[("tasks[0].reason", Some("''"))], "tasks[0].reason", "must not be empty"),
];

#[test]
fn validation_cases() {
    let mut failures = Vec::new();
    for (mutations, want_path, want_msg) in CASES {
        let mut v = example_value();
        for (path, value) in *mutations {
            set(&mut v, path, *value);
        }
        let m: Manifest = match serde_json::from_value(v) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{mutations:?}: does not deserialize: {e}"));
                continue;
            }
        };
        let errors = match m.validate() {
            Ok(()) => {
                failures.push(format!("{mutations:?}: accepted"));
                continue;
            }
            Err(e) => e,
        };
        if !errors
            .0
            .iter()
            .any(|e| e.path == *want_path && e.message.contains(want_msg))
        {
            failures.push(format!(
                "{mutations:?}: want {want_path}: ...{want_msg}..., got {errors}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn error_message_names_the_path() {
    let mut v = example_value();
    set(&mut v, "daemons.web.image", Some("mian"));
    let m: Manifest = serde_json::from_value(v).unwrap();
    assert_eq!(
        m.validate().unwrap_err().to_string(),
        "daemons.web.image: unknown image \"mian\" (known: main, postgres)"
    );
}
