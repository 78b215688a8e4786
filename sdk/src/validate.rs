//! `Manifest::validate`: every problem, each with its field path
//! (`daemons.web.image: unknown image "mian" (known: main)`).

use std::collections::{BTreeMap, BTreeSet};

use crds::{
    ValidationErrors,
    name::check_dns_label,
    validation::Validator,
    version::{Version, VersionRange},
};
use serde_json::Value;

use crate::manifest::*;

const SHORT_MAX: usize = 160;
const LONG_MAX: usize = 5000;

fn known<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let ids: Vec<&str> = ids.into_iter().collect();
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

fn check_id(v: &mut Validator<'_>, id: &str) {
    if let Err(e) = check_dns_label(id) {
        v.error(format!("invalid id: {e}"));
    }
}

fn check_url(v: &mut Validator<'_>, url: &Option<String>) {
    if let Some(u) = url {
        v.check(
            (u.starts_with("https://") || u.starts_with("http://"))
                && !u.contains(char::is_whitespace),
            || format!("{u:?} is not an http(s) URL"),
        );
    }
}

fn check_abs_path(v: &mut Validator<'_>, p: &str) {
    v.check(
        p.starts_with('/') && !p.split('/').any(|c| c == ".."),
        || format!("{p:?} must be an absolute path without '..'"),
    );
}

fn check_rel_path(v: &mut Validator<'_>, p: &str) {
    v.check(
        !p.is_empty() && !p.starts_with('/') && !p.split('/').any(|c| c == ".."),
        || format!("{p:?} must be a relative path inside the package source, without '..'"),
    );
}

/// A version written in full, `upstream:downstream`.
fn parse_full_version(v: &mut Validator<'_>, s: &str) -> Option<Version> {
    match s.parse::<Version>() {
        Err(e) => {
            v.error(e.to_string());
            None
        }
        Ok(_) if !s.contains(':') => {
            v.error(format!(
                "{s:?} must be written as upstream:downstream (e.g. \"{s}:0\")"
            ));
            None
        }
        Ok(ver) => Some(ver),
    }
}

fn check_port(v: &mut Validator<'_>, port: u32) {
    v.check((1..=65535).contains(&port), || {
        format!("port {port} is not in 1..=65535")
    });
}

fn check_env(v: &mut Validator<'_>, env: &BTreeMap<String, String>) {
    for key in env.keys() {
        let ok = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        v.at(key).check(ok, || {
            format!("{key:?} is not a valid environment variable name")
        });
    }
}

fn check_argv(v: &mut Validator<'_>, argv: &[String]) {
    v.check(!argv.is_empty(), || "must not be empty".into());
}

/// Object schema check for action inputs.
fn check_object_schema(v: &mut Validator<'_>, schema: &Value) {
    let Some(obj) = schema.as_object() else {
        v.error("must be a JSON Schema object with \"type\": \"object\"");
        return;
    };
    let ty_ok = match obj.get("type") {
        Some(Value::String(t)) => t == "object",
        _ => false,
    };
    v.at("type").check(ty_ok, || {
        format!(
            "an action input must be an object schema (\"type\": \"object\"), got {}",
            obj.get("type").map_or("nothing".into(), Value::to_string)
        )
    });
    if let Some(props) = obj.get("properties") {
        v.at("properties")
            .check(props.is_object(), || "must be an object".into());
    }
    if let Some(req) = obj.get("required") {
        v.at("required").check(
            req.as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)),
            || "must be a list of strings".into(),
        );
    }
}

struct Ctx<'m> {
    m: &'m Manifest,
    volumes: BTreeSet<&'m str>,
}

impl Ctx<'_> {
    fn image(&self, v: &mut Validator<'_>, id: &str) {
        v.check(self.m.images.contains_key(id), || {
            format!(
                "unknown image {id:?} (known: {})",
                known(self.m.images.keys().map(String::as_str))
            )
        });
    }

    fn volume(&self, v: &mut Validator<'_>, id: &str) {
        v.check(self.volumes.contains(id), || {
            format!(
                "unknown volume {id:?} (known: {})",
                known(self.m.volumes.iter().map(String::as_str))
            )
        });
    }

    fn mounts(&self, v: &mut Validator<'_>, mounts: &[Mount]) {
        let mut paths = BTreeSet::new();
        for (i, m) in mounts.iter().enumerate() {
            let mut v = v.index(i);
            check_abs_path(&mut v.at("path"), &m.path);
            v.at("path").check(paths.insert(m.path.as_str()), || {
                format!("{:?} is mounted twice", m.path)
            });
            match m.source() {
                None => v.error(
                    "set exactly one of: volume (own volume), assets: true, or dependency + volume",
                ),
                Some(MountSource::Volume { volume, .. }) => {
                    self.volume(&mut v.at("volume"), volume)
                }
                Some(MountSource::Assets) => {
                    v.at("readOnly").check(!m.read_only, || {
                        "assets are always read-only; omit readOnly".into()
                    });
                }
                Some(MountSource::Dependency { package, volume }) => {
                    v.at("dependency")
                        .check(self.m.dependencies.contains_key(package), || {
                            format!(
                                "unknown dependency {package:?} (known: {})",
                                known(self.m.dependencies.keys().map(String::as_str))
                            )
                        });
                    if let Err(e) = check_dns_label(volume) {
                        v.at("volume").error(format!("invalid id: {e}"));
                    }
                    v.at("readOnly").check(!m.read_only, || {
                        "dependency volumes are always read-only; omit readOnly".into()
                    });
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn process(
        &self,
        v: &mut Validator<'_>,
        image: &str,
        command: Option<&[String]>,
        env: &BTreeMap<String, String>,
        workdir: Option<&str>,
        mounts: &[Mount],
        requires: &[String],
    ) {
        self.image(&mut v.at("image"), image);
        match command {
            Some(c) => check_argv(&mut v.at("command"), c),
            None => {
                if let Some(img) = self.m.images.get(image) {
                    v.at("command")
                        .check(!img.entrypoint.is_empty() || !img.cmd.is_empty(), || {
                            format!("required: image {image:?} declares no entrypoint or cmd")
                        });
                }
            }
        }
        check_env(&mut v.at("env"), env);
        if let Some(w) = workdir {
            check_abs_path(&mut v.at("workdir"), w);
        }
        self.mounts(&mut v.at("mounts"), mounts);
        let mut seen = BTreeSet::new();
        for (i, r) in requires.iter().enumerate() {
            let mut v = v.at("requires");
            let mut v = v.index(i);
            let exists = self.m.daemons.contains_key(r) || self.m.oneshots.contains_key(r);
            v.check(exists, || {
                format!(
                    "unknown daemon or oneshot {r:?} (known: {})",
                    known(
                        self.m
                            .daemons
                            .keys()
                            .chain(self.m.oneshots.keys())
                            .map(String::as_str)
                            .collect::<BTreeSet<_>>()
                    )
                )
            });
            v.check(seen.insert(r), || format!("{r:?} is listed twice"));
        }
    }

    fn hook(&self, v: &mut Validator<'_>, h: &Hook) {
        self.image(&mut v.at("image"), &h.image);
        check_argv(&mut v.at("command"), &h.command);
        check_env(&mut v.at("env"), &h.env);
        self.mounts(&mut v.at("mounts"), &h.mounts);
    }
}

/// Reports each cycle in the `requires` graph once, at the lexicographically first id on it.
fn check_cycles(m: &Manifest, v: &mut Validator<'_>) {
    let mut graph: BTreeMap<&str, (&str, Vec<&str>)> = BTreeMap::new();
    for (id, d) in &m.daemons {
        graph.insert(
            id,
            ("daemons", d.requires.iter().map(String::as_str).collect()),
        );
    }
    for (id, o) in &m.oneshots {
        graph
            .entry(id)
            .or_insert(("oneshots", o.requires.iter().map(String::as_str).collect()));
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark: BTreeMap<&str, Mark> = graph.keys().map(|k| (*k, Mark::New)).collect();
    let mut cycles: Vec<Vec<&str>> = Vec::new();
    fn visit<'a>(
        id: &'a str,
        graph: &BTreeMap<&'a str, (&'a str, Vec<&'a str>)>,
        mark: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<Vec<&'a str>>,
    ) {
        mark.insert(id, Mark::Active);
        stack.push(id);
        for &next in &graph[id].1 {
            match mark.get(next) {
                Some(Mark::New) => visit(next, graph, mark, stack, cycles),
                Some(Mark::Active) => {
                    let start = stack.iter().position(|s| *s == next).unwrap_or(0);
                    cycles.push(stack[start..].to_vec());
                }
                _ => {}
            }
        }
        stack.pop();
        mark.insert(id, Mark::Done);
    }
    let ids: Vec<&str> = graph.keys().copied().collect();
    for id in ids {
        if mark[id] == Mark::New {
            visit(id, &graph, &mut mark, &mut Vec::new(), &mut cycles);
        }
    }
    for cycle in cycles {
        let first = cycle[0];
        let section = graph[first].0;
        let path = cycle
            .iter()
            .chain(std::iter::once(&first))
            .copied()
            .collect::<Vec<_>>()
            .join(" -> ");
        v.at(section)
            .at(first)
            .at("requires")
            .error(format!("requires cycle: {path}"));
    }
}

impl Manifest {
    /// Checks everything that can be checked without other manifests or files.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let mut v = Validator::new(&mut errors);
        self.check(&mut v);
        errors.into_result()
    }

    fn check(&self, v: &mut Validator<'_>) {
        let version = self.check_about(v);
        let arch = self.check_arch(v);
        self.check_images(v, &arch);
        let ctx = Ctx {
            m: self,
            volumes: self.check_volumes(v),
        };
        self.check_processes(v, &ctx);
        self.check_interfaces(v);
        self.check_actions_and_tasks(v, &ctx);
        self.check_dependencies(v);
        self.check_backup(v, &ctx);
        self.check_migrations(v, &ctx, version.as_ref());
    }

    /// Identity and descriptions; the parsed version when it parses.
    fn check_about(&self, v: &mut Validator<'_>) -> Option<Version> {
        check_id(&mut v.at("id"), &self.id);
        v.at("title")
            .check(!self.title.trim().is_empty(), || "must not be empty".into());
        let version = parse_full_version(&mut v.at("version"), &self.version);
        v.at("license").check(!self.license.trim().is_empty(), || {
            "must not be empty".into()
        });
        check_url(&mut v.at("wrapperRepo"), &self.wrapper_repo);
        check_url(&mut v.at("upstreamRepo"), &self.upstream_repo);
        check_url(&mut v.at("supportSite"), &self.support_site);
        check_url(&mut v.at("marketingSite"), &self.marketing_site);
        {
            let d = &self.description;
            let mut v = v.at("description");
            let n = d.short.chars().count();
            v.at("short").check(n > 0 && n <= SHORT_MAX, || {
                format!("must be 1 to {SHORT_MAX} characters (got {n})")
            });
            let n = d.long.chars().count();
            v.at("long").check(n > 0 && n <= LONG_MAX, || {
                format!("must be 1 to {LONG_MAX} characters (got {n})")
            });
        }
        version
    }

    /// The architectures, and the hardware requirements against them.
    fn check_arch(&self, v: &mut Validator<'_>) -> BTreeSet<Arch> {
        v.at("arch").check(!self.arch.is_empty(), || {
            "must list at least one architecture".into()
        });
        let arch: BTreeSet<Arch> = self.arch.iter().copied().collect();
        v.at("arch").check(arch.len() == self.arch.len(), || {
            "lists an architecture twice".into()
        });
        let arch_list = || known(self.arch.iter().map(|a| a.as_str()));
        {
            let hw = &self.hardware_requirements;
            let mut v = v.at("hardwareRequirements");
            for (i, a) in hw.arch.iter().flatten().enumerate() {
                v.at("arch").index(i).check(arch.contains(a), || {
                    format!("{a} is not in the manifest's arch ({})", arch_list())
                });
            }
            for (i, d) in hw.devices.iter().flatten().enumerate() {
                v.at("devices")
                    .index(i)
                    .at("description")
                    .check(!d.description.trim().is_empty(), || {
                        "must not be empty".into()
                    });
            }
        }
        arch
    }

    fn check_images(&self, v: &mut Validator<'_>, arch: &BTreeSet<Arch>) {
        let arch_list = || known(self.arch.iter().map(|a| a.as_str()));
        for (id, img) in &self.images {
            let mut v = v.at("images");
            let mut v = v.at(id);
            check_id(&mut v, id);
            for (i, a) in img.arch.iter().enumerate() {
                v.at("arch").index(i).check(arch.contains(a), || {
                    format!("{a} is not in the manifest's arch ({})", arch_list())
                });
            }
            if let Some(src) = &img.source {
                let mut v = v.at("source");
                let common = src.has_common();
                if common {
                    match src.common().get() {
                        Some(r) => check_rel_path(&mut v.at(kind_field(r)), r.path()),
                        None => v.error("set only one of directory, tarball, squashfs"),
                    }
                }
                let img_arch = self.image_arch(id).unwrap_or_default();
                for a in Arch::ALL {
                    let mut v = v.at(a.as_str());
                    match src.per_arch(a) {
                        Some(s) => {
                            v.check(img_arch.contains(&a), || {
                                format!("image {id:?} is not built for {a}")
                            });
                            match s.get() {
                                Some(r) => check_rel_path(&mut v.at(kind_field(r)), r.path()),
                                None => v.error("set exactly one of directory, tarball, squashfs"),
                            }
                        }
                        None if !common && img_arch.contains(&a) => v.error(format!(
                            "no source for {a} (or give one for all architectures)"
                        )),
                        None => {}
                    }
                }
            }
            if let Some(w) = &img.workdir {
                check_abs_path(&mut v.at("workdir"), w);
            }
            check_env(&mut v.at("env"), &img.env);
        }
    }

    /// The volume ids, each once.
    fn check_volumes(&self, v: &mut Validator<'_>) -> BTreeSet<&str> {
        let mut volumes = BTreeSet::new();
        for (i, id) in self.volumes.iter().enumerate() {
            let mut v = v.at("volumes");
            let mut v = v.index(i);
            check_id(&mut v, id);
            v.check(volumes.insert(id.as_str()), || {
                format!("duplicate volume id {id:?}")
            });
        }
        volumes
    }

    /// Daemons and oneshots (one id namespace) and the cycles in their `requires`.
    fn check_processes(&self, v: &mut Validator<'_>, ctx: &Ctx<'_>) {
        for (id, d) in &self.daemons {
            let mut v = v.at("daemons");
            let mut v = v.at(id);
            check_id(&mut v, id);
            ctx.process(
                &mut v,
                &d.image,
                d.command.as_deref(),
                &d.env,
                d.workdir.as_deref(),
                &d.mounts,
                &d.requires,
            );
            if let Some(r) = &d.ready {
                let mut v = v.at("ready");
                match r.probe() {
                    None => v.error("set exactly one of http, tcp, exec"),
                    Some(Probe::Http(h)) => {
                        check_port(&mut v.at("http").at("port"), h.port);
                        v.at("http").at("path").check(h.path.starts_with('/'), || {
                            format!("{:?} must start with '/'", h.path)
                        });
                    }
                    Some(Probe::Tcp(t)) => check_port(&mut v.at("tcp").at("port"), t.port),
                    Some(Probe::Exec(e)) => check_argv(&mut v.at("exec").at("command"), &e.command),
                }
                v.at("periodSeconds")
                    .check(r.period_seconds > 0, || "must be at least 1".into());
                v.at("timeoutSeconds")
                    .check(r.timeout_seconds > 0, || "must be at least 1".into());
            }
        }
        for (id, o) in &self.oneshots {
            let mut v = v.at("oneshots");
            let mut v = v.at(id);
            check_id(&mut v, id);
            v.check(!self.daemons.contains_key(id), || {
                format!("{id:?} is also a daemon id; daemons and oneshots share one namespace")
            });
            ctx.process(
                &mut v,
                &o.image,
                o.command.as_deref(),
                &o.env,
                o.workdir.as_deref(),
                &o.mounts,
                &o.requires,
            );
        }
        check_cycles(self, v);
    }

    fn check_interfaces(&self, v: &mut Validator<'_>) {
        for (id, iface) in &self.interfaces {
            let mut v = v.at("interfaces");
            let mut v = v.at(id);
            check_id(&mut v, id);
            v.at("name")
                .check(!iface.name.trim().is_empty(), || "must not be empty".into());
            if let Some(d) = &iface.daemon {
                v.at("daemon").check(self.daemons.contains_key(d), || {
                    format!(
                        "unknown daemon {d:?} (known: {})",
                        known(self.daemons.keys().map(String::as_str))
                    )
                });
            }
            check_port(&mut v.at("internalPort"), iface.internal_port);
            v.at("hostTls").check(
                !(iface.host_tls && matches!(iface.protocol, Protocol::Udp | Protocol::Dns)),
                || format!("the host cannot terminate TLS for {:?}", iface.protocol),
            );
            if let Some(p) = &iface.path {
                v.at("path")
                    .check(p.starts_with('/'), || format!("{p:?} must start with '/'"));
            }
        }
    }

    fn check_actions_and_tasks(&self, v: &mut Validator<'_>, ctx: &Ctx<'_>) {
        for (id, a) in &self.actions {
            let mut v = v.at("actions");
            let mut v = v.at(id);
            check_id(&mut v, id);
            v.at("name")
                .check(!a.name.trim().is_empty(), || "must not be empty".into());
            if let Some(input) = &a.input {
                check_object_schema(&mut v.at("input"), input);
            }
            ctx.image(&mut v.at("image"), &a.image);
            check_argv(&mut v.at("command"), &a.command);
            check_env(&mut v.at("env"), &a.env);
            ctx.mounts(&mut v.at("mounts"), &a.mounts);
        }
        for (i, t) in self.tasks.iter().enumerate() {
            let mut v = v.at("tasks");
            let mut v = v.index(i);
            v.at("action")
                .check(self.actions.contains_key(&t.action), || {
                    format!(
                        "unknown action {:?} (known: {})",
                        t.action,
                        known(self.actions.keys().map(String::as_str))
                    )
                });
            v.at("reason")
                .check(!t.reason.trim().is_empty(), || "must not be empty".into());
        }
    }

    fn check_dependencies(&self, v: &mut Validator<'_>) {
        for (id, dep) in &self.dependencies {
            let mut v = v.at("dependencies");
            let mut v = v.at(id);
            check_id(&mut v, id);
            v.check(id != &self.id, || {
                "a package cannot depend on itself".into()
            });
            if let Err(e) = dep.version_range.parse::<VersionRange>() {
                v.at("versionRange").error(e.to_string());
            }
            if dep.kind == DependencyKind::Exists {
                v.at("healthChecks")
                    .check(dep.health_checks.is_empty(), || {
                        "health checks only apply to kind: running".into()
                    });
            }
            let mut seen = BTreeSet::new();
            for (i, hc) in dep.health_checks.iter().enumerate() {
                let mut v = v.at("healthChecks");
                let mut v = v.index(i);
                check_id(&mut v, hc);
                v.check(seen.insert(hc), || format!("{hc:?} is listed twice"));
            }
        }
    }

    fn check_backup(&self, v: &mut Validator<'_>, ctx: &Ctx<'_>) {
        if let Some(b) = &self.backup {
            let mut v = v.at("backup");
            let mut seen = BTreeSet::new();
            for (i, vol) in b.volumes.iter().enumerate() {
                let mut v = v.at("volumes");
                let mut v = v.index(i);
                ctx.volume(&mut v, vol);
                v.check(seen.insert(vol), || format!("{vol:?} is listed twice"));
            }
            for (i, g) in b.excludes.iter().enumerate() {
                v.at("excludes")
                    .index(i)
                    .check(!g.is_empty(), || "must not be empty".into());
            }
            if let Some(h) = &b.pre_hook {
                ctx.hook(&mut v.at("preHook"), h);
            }
            if let Some(h) = &b.post_hook {
                ctx.hook(&mut v.at("postHook"), h);
            }
        }
    }

    /// Migrations, against the package version when it parsed.
    fn check_migrations(&self, v: &mut Validator<'_>, ctx: &Ctx<'_>, version: Option<&Version>) {
        for (i, mig) in self.migrations.iter().enumerate() {
            let mut v = v.at("migrations");
            let mut v = v.index(i);
            let from = mig.from.parse::<VersionRange>();
            if let Err(e) = &from {
                v.at("from").error(e.to_string());
            }
            if let Some(to) = parse_full_version(&mut v.at("to"), &mig.to) {
                if let Some(ver) = version {
                    v.at("to").check(&to <= ver, || {
                        format!("{to} is newer than the package version {ver}")
                    });
                }
                if let Ok(from) = &from {
                    v.at("from").check(!from.matches(&to), || {
                        format!("{:?} includes the target version {to}", mig.from)
                    });
                }
            }
            ctx.hook(&mut v.at("up"), &mig.up);
            if let Some(d) = &mig.down {
                ctx.hook(&mut v.at("down"), d);
            }
        }
    }

    /// Checks this package's declared needs against the manifest of dependency `dep`
    /// (at install time, once the dependency is known): the version range, health checks
    /// and mounted volumes must exist there.
    pub fn check_dependency(&self, dep: &Manifest) -> Result<(), ValidationErrors> {
        let Some(decl) = self.dependencies.get(&dep.id) else {
            return Err(ValidationErrors::single(
                format!("dependencies.{}", dep.id),
                "not declared as a dependency",
            ));
        };
        let mut errors = ValidationErrors::default();
        let mut root = Validator::new(&mut errors);
        {
            let mut v = root.at("dependencies");
            let mut v = v.at(&dep.id);
            if let (Ok(range), Ok(ver)) = (decl.parsed_range(), dep.parsed_version()) {
                v.at("versionRange").check(range.matches(&ver), || {
                    format!("{} {ver} is not in {:?}", dep.id, decl.version_range)
                });
            }
            let checks: BTreeSet<&str> = dep.health_checks().collect();
            for (i, hc) in decl.health_checks.iter().enumerate() {
                v.at("healthChecks")
                    .index(i)
                    .check(checks.contains(hc.as_str()), || {
                        format!(
                            "{} has no health check {hc:?} (known: {})",
                            dep.id,
                            known(checks.iter().copied())
                        )
                    });
            }
        }
        let mut mounts: Vec<(String, &[Mount])> = Vec::new();
        for (id, d) in &self.daemons {
            mounts.push((format!("daemons.{id}.mounts"), &d.mounts));
        }
        for (id, o) in &self.oneshots {
            mounts.push((format!("oneshots.{id}.mounts"), &o.mounts));
        }
        for (id, a) in &self.actions {
            mounts.push((format!("actions.{id}.mounts"), &a.mounts));
        }
        for (path, ms) in mounts {
            for (i, m) in ms.iter().enumerate() {
                if let Some(MountSource::Dependency { package, volume }) = m.source()
                    && package == dep.id
                {
                    root.at(&path).index(i).at("volume").check(
                        dep.volumes.iter().any(|x| x == volume),
                        || {
                            format!(
                                "{} has no volume {volume:?} (known: {})",
                                dep.id,
                                known(dep.volumes.iter().map(String::as_str))
                            )
                        },
                    );
                }
            }
        }
        errors.into_result()
    }
}

fn kind_field(r: ImageSourceRef<'_>) -> &'static str {
    match r {
        ImageSourceRef::Directory(_) => "directory",
        ImageSourceRef::Tarball(_) => "tarball",
        ImageSourceRef::Squashfs(_) => "squashfs",
    }
}
