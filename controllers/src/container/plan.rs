//! What a package's container runs, planned from its manifest: the `start-container`
//! configuration (every oneshot and daemon with its image's defaults applied, volumes
//! mapped, probes mapped) and the `start-container exec-in` command line of an action.
//!
//! Pure: no I/O. The manifest's types (`sdk`) and the supervisor's (`container_runtime`)
//! are deliberately apart (the static binary carries no manifest machinery); this is the one
//! place that maps one onto the other. The sdk structs are destructured without `..` and the
//! runtime's built without `..`, so a field added on either side does not compile until it
//! is mapped here.
//!
//! Inside every container the paths are fixed (the constants below); [`Paths`] lets a test
//! run `start-container` on the host with host directories instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use container_runtime::config as rt;
use container_runtime::exec_in::{Bind, exec_in_args, exec_in_env};

/// `start-container` inside the container: a single file bind-mounted at the top of the
/// container's root, which is otherwise only mount points, so no directory is made for it
/// and no image or volume mount can hide it.
pub const BINARY: &str = "/start-container";
/// The configuration, where `start-container run` looks by default.
pub const CONFIG_FILE: &str = "/etc/start-container/config.json";
/// Image `<id>` is mounted read-only at `/images/<id>`.
pub const IMAGES_DIR: &str = "/images";
/// Volume `<id>` is mounted at `/volumes/<id>`.
pub const VOLUMES_DIR: &str = "/volumes";
/// What the host reads back: it binds the container directory's `run/`
/// (`layout::ContainerDir::run`) here, so [`STATUS_FILE`] and [`LOG_DIR`] are its
/// `status_file()` and `logs()`.
pub const RUN_DIR: &str = "/run/start-container";
/// The effects directory (`layout::ContainerDir::effects`: the socket, its token, and
/// [`BINARY`] bound at `start-container` in it), bound read-only here by the host; every
/// process gets it again at `/run` of its image (`exec_in::EFFECTS_TARGET`).
pub const EFFECTS_DIR: &str = container_runtime::effects_cli::CONTAINER_EFFECTS_DIR;
/// The status file, atomically replaced by `start-container` on every change.
pub const STATUS_FILE: &str = rt::DEFAULT_STATUS_FILE;
/// The per-process logs `<id>.log` (and `<id>.log.1`).
pub const LOG_DIR: &str = "/run/start-container/logs";
/// What the host asks of the supervisor: it binds the container directory's `control/`
/// (`layout::ContainerDir::control`) here read-only, a directory so that the host can
/// replace [`CONTROL_FILE`] atomically.
pub const CONTROL_DIR: &str = "/etc/start-container/control";
/// The daemons' desired run state (`running` or `stopped`), re-read on SIGUSR1.
pub const CONTROL_FILE: &str = rt::DEFAULT_CONTROL_FILE;

/// The container's init: `start-container run` on [`CONFIG_FILE`].
pub fn init_command() -> Vec<String> {
    [BINARY, "run", "--config", CONFIG_FILE]
        .map(String::from)
        .to_vec()
}

/// Where `start-container`, the images, the volumes, the status file and the logs are as
/// the supervisor sees them. The controller uses [`Paths::in_container`]; a test running
/// `start-container` directly on the host gives host directories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// The `start-container` binary (the first word of an action's command line).
    pub binary: PathBuf,
    /// Holds image `<id>` at `<images>/<id>`.
    pub images: PathBuf,
    /// Holds volume `<id>` at `<volumes>/<id>`.
    pub volumes: PathBuf,
    pub status_file: PathBuf,
    pub log_dir: PathBuf,
    pub control_file: PathBuf,
    /// The effects directory every process gets at its image's `/run`; none without.
    pub effects: Option<PathBuf>,
}

impl Paths {
    /// The fixed paths inside every container.
    pub fn in_container() -> Paths {
        Paths {
            binary: BINARY.into(),
            images: IMAGES_DIR.into(),
            volumes: VOLUMES_DIR.into(),
            status_file: STATUS_FILE.into(),
            log_dir: LOG_DIR.into(),
            control_file: CONTROL_FILE.into(),
            effects: Some(EFFECTS_DIR.into()),
        }
    }

    pub fn image(&self, id: &str) -> PathBuf {
        self.images.join(id)
    }

    pub fn volume(&self, id: &str) -> PathBuf {
        self.volumes.join(id)
    }
}

impl Default for Paths {
    fn default() -> Self {
        Paths::in_container()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("package {package:?}: {what} id {id:?} cannot name a directory or file: {message}")]
    BadId {
        package: String,
        what: &'static str,
        id: String,
        message: String,
    },
    #[error("package {package:?}: {process}: image {image:?} has no image configuration")]
    NoImageConfig {
        package: String,
        process: String,
        image: String,
    },
    #[error(
        "package {package:?}: {process}: mount at {path:?}: {kind} mounts are not supported yet"
    )]
    UnsupportedMount {
        package: String,
        process: String,
        path: String,
        kind: &'static str,
    },
    #[error(
        "package {package:?}: {process}: mount at {path:?} is neither a volume, the assets nor a dependency's volume"
    )]
    BadMount {
        package: String,
        process: String,
        path: String,
    },
    #[error("package {package:?}: {process}: mount at {path:?}: unknown volume {volume:?}")]
    UnknownVolume {
        package: String,
        process: String,
        path: String,
        volume: String,
    },
    #[error("package {package:?}: {process}: probe port {port} is not a TCP port (1-65535)")]
    ProbePort {
        package: String,
        process: String,
        port: u32,
    },
    #[error("package {package:?}: no action {action:?}")]
    UnknownAction { package: String, action: String },
    #[error("package {package:?}: {path} is not UTF-8, so it cannot go on a command line")]
    NotUtf8 { package: String, path: PathBuf },
    #[error("package {package:?}: start-container would refuse it: {message}")]
    Invalid { package: String, message: String },
}

/// The `start-container` configuration of `manifest`'s container, with the in-container
/// paths. `images` holds each image's runtime defaults (`archives::image_config`).
pub fn runtime_config(
    manifest: &sdk::Manifest,
    images: &BTreeMap<String, sdk::ImageConfig>,
    stop_timeout_seconds: u32,
) -> Result<rt::Config, PlanError> {
    runtime_config_at(
        &Paths::in_container(),
        manifest,
        images,
        stop_timeout_seconds,
    )
}

/// [`runtime_config`] with the given paths. The result passes `start-container`'s own
/// validation (a manifest it would refuse is an error here, at planning time).
pub fn runtime_config_at(
    paths: &Paths,
    manifest: &sdk::Manifest,
    images: &BTreeMap<String, sdk::ImageConfig>,
    stop_timeout_seconds: u32,
) -> Result<rt::Config, PlanError> {
    let plan = Planner { manifest, images };
    plan.check_ids()?;
    let mut oneshots = BTreeMap::new();
    for (id, o) in &manifest.oneshots {
        let sdk::Oneshot {
            image,
            command,
            env,
            workdir,
            user,
            mounts,
            requires,
        } = o;
        let spec = Spec {
            image,
            command: command.as_deref(),
            env,
            workdir,
            user,
            mounts,
            requires,
        };
        let process = format!("oneshot {id:?}");
        oneshots.insert(id.clone(), plan.process(&process, spec, None)?);
    }
    let mut daemons = BTreeMap::new();
    for (id, d) in &manifest.daemons {
        let sdk::Daemon {
            image,
            command,
            env,
            workdir,
            user,
            mounts,
            requires,
            ready,
        } = d;
        let spec = Spec {
            image,
            command: command.as_deref(),
            env,
            workdir,
            user,
            mounts,
            requires,
        };
        let process = format!("daemon {id:?}");
        daemons.insert(id.clone(), plan.process(&process, spec, ready.as_ref())?);
    }
    let config = rt::Config {
        images: manifest
            .images
            .keys()
            .map(|id| (id.clone(), paths.image(id)))
            .collect(),
        volumes: manifest
            .volumes
            .iter()
            .map(|id| (id.clone(), paths.volume(id)))
            .collect(),
        oneshots,
        daemons,
        stop_timeout_seconds,
        restart: rt::Restart::default(),
        status_file: paths.status_file.clone(),
        control_file: paths.control_file.clone(),
        log_dir: paths.log_dir.clone(),
        log_max_bytes: rt::DEFAULT_LOG_MAX_BYTES,
        effects_dir: paths.effects.clone(),
    };
    config.validate().map_err(|message| plan.invalid(message))?;
    Ok(config)
}

/// How to run an action inside the running container: `lxc-attach --clear-env` with
/// `env` set (`--set-var K=V` each), then `argv`. The action's input JSON is written to
/// its stdin (nothing when it takes no input) and its result JSON read from its stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionExec {
    /// `[start-container, "exec-in", "--root", "/images/<image>", ("--binds", <json>),
    /// ("--user", u), ("--workdir", w), "--", argv...]`.
    pub argv: Vec<String>,
    /// The image's environment overlaid by the action's, `PATH` defaulted as for processes.
    pub env: BTreeMap<String, String>,
}

/// The command line of action `action_id`, with the in-container paths.
pub fn action_exec(
    manifest: &sdk::Manifest,
    images: &BTreeMap<String, sdk::ImageConfig>,
    action_id: &str,
) -> Result<ActionExec, PlanError> {
    action_exec_at(&Paths::in_container(), manifest, images, action_id)
}

/// [`action_exec`] with the given paths. An action runs as a process would that names no
/// workdir or user of its own: in its image's defaults.
pub fn action_exec_at(
    paths: &Paths,
    manifest: &sdk::Manifest,
    images: &BTreeMap<String, sdk::ImageConfig>,
    action_id: &str,
) -> Result<ActionExec, PlanError> {
    let plan = Planner { manifest, images };
    plan.check_ids()?;
    let action = manifest
        .actions
        .get(action_id)
        .ok_or_else(|| PlanError::UnknownAction {
            package: manifest.id.clone(),
            action: action_id.to_owned(),
        })?;
    // What the user sees (name, description, warning, input schema) and when it may run
    // (allowedStatuses, visibility) is the action controller's; how it runs is here.
    let sdk::Action {
        name: _,
        description: _,
        warning: _,
        input: _,
        allowed_statuses: _,
        visibility: _,
        image,
        command,
        env,
        mounts,
    } = action;
    one_exec(
        paths,
        &plan,
        &format!("action {action_id:?}"),
        action_id,
        Spec {
            image,
            command: Some(command),
            env,
            workdir: &None,
            user: &None,
            mounts,
            requires: &[],
        },
    )
}

/// How a migration hook runs in the package's container: like an action, in its image's
/// defaults, with the mounts it names.
pub fn hook_exec(
    manifest: &sdk::Manifest,
    images: &BTreeMap<String, sdk::ImageConfig>,
    label: &str,
    hook: &sdk::Hook,
) -> Result<ActionExec, PlanError> {
    let plan = Planner { manifest, images };
    plan.check_ids()?;
    let sdk::Hook {
        image,
        command,
        env,
        mounts,
    } = hook;
    one_exec(
        &Paths::in_container(),
        &plan,
        label,
        "hook",
        Spec {
            image,
            command: Some(command),
            env,
            workdir: &None,
            user: &None,
            mounts,
            requires: &[],
        },
    )
}

/// The `exec-in` argv of one process outside the supervisor (an action, a hook).
fn one_exec(
    paths: &Paths,
    plan: &Planner<'_>,
    label: &str,
    action_id: &str,
    spec: Spec<'_>,
) -> Result<ActionExec, PlanError> {
    let manifest = plan.manifest;
    let process = plan.process(label, spec, None)?;
    // The checks start-container makes on a process (non-empty argv, no NUL, environment
    // names, mount paths), made on a configuration holding just this one.
    let alone = rt::Config {
        images: BTreeMap::from([(process.image.clone(), paths.image(&process.image))]),
        volumes: process
            .mounts
            .iter()
            .map(|m| (m.volume.clone(), paths.volume(&m.volume)))
            .collect(),
        oneshots: BTreeMap::from([(action_id.to_owned(), process.clone())]),
        daemons: BTreeMap::new(),
        stop_timeout_seconds: 0,
        restart: rt::Restart::default(),
        status_file: paths.status_file.clone(),
        control_file: paths.control_file.clone(),
        log_dir: paths.log_dir.clone(),
        log_max_bytes: rt::DEFAULT_LOG_MAX_BYTES,
        effects_dir: paths.effects.clone(),
    };
    alone.validate().map_err(|message| plan.invalid(message))?;
    let binds: Vec<Bind> = process
        .mounts
        .iter()
        .map(|m| Bind {
            source: paths.volume(&m.volume),
            target: m.path.clone(),
            read_only: m.read_only,
        })
        .collect();
    let not_utf8 = |path: &Path| PlanError::NotUtf8 {
        package: manifest.id.clone(),
        path: path.to_owned(),
    };
    let args = exec_in_args(
        &paths.image(&process.image),
        &binds,
        paths.effects.as_deref(),
        process.user.as_deref(),
        process.workdir.as_deref(),
        &process.command,
    )
    .map_err(|_| not_utf8(&paths.volumes))?;
    let mut argv = vec![
        paths
            .binary
            .to_str()
            .ok_or_else(|| not_utf8(&paths.binary))?
            .to_owned(),
    ];
    for arg in args {
        let arg = arg
            .into_string()
            .map_err(|_| not_utf8(&paths.image(&process.image)))?;
        argv.push(arg);
    }
    Ok(ActionExec {
        argv,
        env: exec_in_env(&process.env),
    })
}

/// The fields oneshots, daemons and actions share.
struct Spec<'a> {
    image: &'a str,
    command: Option<&'a [String]>,
    env: &'a BTreeMap<String, String>,
    workdir: &'a Option<String>,
    user: &'a Option<String>,
    mounts: &'a [sdk::Mount],
    requires: &'a [String],
}

struct Planner<'a> {
    manifest: &'a sdk::Manifest,
    images: &'a BTreeMap<String, sdk::ImageConfig>,
}

impl Planner<'_> {
    fn package(&self) -> String {
        self.manifest.id.clone()
    }

    fn invalid(&self, message: String) -> PlanError {
        PlanError::Invalid {
            package: self.package(),
            message,
        }
    }

    /// Image and volume ids become directory names, process ids log file names: each must
    /// be a DNS label (a validated manifest's are; this does not trust that it was).
    fn check_ids(&self) -> Result<(), PlanError> {
        let m = self.manifest;
        let ids = (m.images.keys().map(|id| ("image", id)))
            .chain(m.volumes.iter().map(|id| ("volume", id)))
            .chain(m.oneshots.keys().map(|id| ("oneshot", id)))
            .chain(m.daemons.keys().map(|id| ("daemon", id)));
        for (what, id) in ids {
            crds::name::check_dns_label(id).map_err(|message| PlanError::BadId {
                package: self.package(),
                what,
                id: id.clone(),
                message,
            })?;
        }
        Ok(())
    }

    /// One process with its image's defaults applied, as `start-container` runs it.
    fn process(
        &self,
        process: &str,
        spec: Spec<'_>,
        ready: Option<&sdk::Ready>,
    ) -> Result<rt::Process, PlanError> {
        let Spec {
            image,
            command,
            env,
            workdir,
            user,
            mounts,
            requires,
        } = spec;
        let defaults = self
            .images
            .get(image)
            .filter(|_| self.manifest.images.contains_key(image))
            .ok_or_else(|| PlanError::NoImageConfig {
                package: self.package(),
                process: process.to_owned(),
                image: image.to_owned(),
            })?;
        let sdk::ImageConfig {
            entrypoint: _,
            cmd: _,
            workdir: image_workdir,
            user: image_user,
            env: image_env,
        } = defaults;
        let mut all_env = image_env.clone();
        all_env.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(rt::Process {
            image: image.to_owned(),
            command: defaults.argv(command),
            env: all_env,
            workdir: workdir.clone().or_else(|| image_workdir.clone()),
            user: user.clone().or_else(|| image_user.clone()),
            mounts: mounts
                .iter()
                .map(|m| self.mount(process, m))
                .collect::<Result<_, _>>()?,
            requires: requires.to_vec(),
            ready: ready.map(|r| self.ready(process, r)).transpose()?,
        })
    }

    fn mount(&self, process: &str, m: &sdk::Mount) -> Result<rt::Mount, PlanError> {
        let unsupported = |kind| PlanError::UnsupportedMount {
            package: self.package(),
            process: process.to_owned(),
            path: m.path.clone(),
            kind,
        };
        match m.source() {
            Some(sdk::MountSource::Volume { volume, read_only }) => {
                if !self.manifest.volumes.iter().any(|v| v == volume) {
                    return Err(PlanError::UnknownVolume {
                        package: self.package(),
                        process: process.to_owned(),
                        path: m.path.clone(),
                        volume: volume.to_owned(),
                    });
                }
                Ok(rt::Mount {
                    volume: volume.to_owned(),
                    path: m.path.clone(),
                    read_only,
                })
            }
            Some(sdk::MountSource::Assets) => Err(unsupported("assets")),
            Some(sdk::MountSource::Dependency { .. }) => Err(unsupported("dependency volume")),
            None => Err(PlanError::BadMount {
                package: self.package(),
                process: process.to_owned(),
                path: m.path.clone(),
            }),
        }
    }

    /// Field for field: the two `Ready`s have the same shape, and the destructuring below
    /// (no `..`) stops compiling when either gains a field.
    fn ready(&self, process: &str, r: &sdk::Ready) -> Result<rt::Ready, PlanError> {
        let port = |port: u32| {
            u16::try_from(port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| PlanError::ProbePort {
                    package: self.package(),
                    process: process.to_owned(),
                    port,
                })
        };
        let sdk::Ready {
            http,
            tcp,
            exec,
            period_seconds,
            timeout_seconds,
            grace_seconds,
        } = r;
        let http = match http {
            Some(sdk::HttpProbe { port: p, path }) => Some(rt::HttpProbe {
                port: port(*p)?,
                path: path.clone(),
            }),
            None => None,
        };
        let tcp = match tcp {
            Some(sdk::TcpProbe { port: p }) => Some(rt::TcpProbe { port: port(*p)? }),
            None => None,
        };
        let exec = exec
            .as_ref()
            .map(|sdk::ExecProbe { command }| rt::ExecProbe {
                command: command.clone(),
            });
        Ok(rt::Ready {
            http,
            tcp,
            exec,
            period_seconds: *period_seconds,
            timeout_seconds: *timeout_seconds,
            grace_seconds: *grace_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(package: &str) -> sdk::Manifest {
        let path = format!(
            "{}/../manifests/packages/{package}/manifest.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let m: sdk::Manifest = serde_saphyr::from_str(&text).unwrap();
        m.validate().unwrap();
        m
    }

    /// The image configurations `s9pk pack` writes into the archive.
    fn image_configs(m: &sdk::Manifest) -> BTreeMap<String, sdk::ImageConfig> {
        m.images
            .iter()
            .map(|(id, spec)| (id.clone(), spec.config()))
            .collect()
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A manifest with one image and one volume, and `daemons` given as YAML.
    fn small(daemons: &str) -> sdk::Manifest {
        let daemons = if daemons.is_empty() { "  {}" } else { daemons };
        let yaml = format!(
            "id: small\ntitle: Small\nversion: \"1.0.0:0\"\nlicense: MIT\n\
             description: {{short: s, long: l}}\narch: [x86_64]\n\
             images:\n  main:\n    entrypoint: [/entry]\n    cmd: [serve]\n    \
             workdir: /srv\n    user: app\n    env: {{PATH: /bin, LANG: C}}\n\
             volumes: [data]\ndaemons:\n{daemons}"
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    fn plan(m: &sdk::Manifest) -> Result<rt::Config, PlanError> {
        runtime_config(m, &image_configs(m), 20)
    }

    #[test]
    fn hello_world_runs_its_daemon_in_its_image() {
        let c = plan(&manifest("hello-world")).unwrap();
        assert_eq!(
            c.images,
            BTreeMap::from([("main".into(), "/images/main".into())])
        );
        assert_eq!(
            c.volumes,
            BTreeMap::from([("data".into(), "/volumes/data".into())])
        );
        assert!(c.oneshots.is_empty());
        assert_eq!(c.stop_timeout_seconds, 20);
        assert_eq!(c.status_file, Path::new("/run/start-container/status.json"));
        assert_eq!(c.log_dir, Path::new("/run/start-container/logs"));
        assert_eq!(
            c.control_file,
            Path::new("/etc/start-container/control/run-state")
        );
        assert!(c.control_file.starts_with(CONTROL_DIR));
        let main = &c.daemons["main"];
        assert_eq!(
            main,
            &rt::Process {
                image: "main".into(),
                command: strings(&["httpd", "-f", "-p", "8080", "-h", "/www"]),
                env: env(&[("PATH", "/bin")]),
                workdir: Some("/".into()),
                user: Some("root".into()),
                mounts: vec![rt::Mount {
                    volume: "data".into(),
                    path: "/data".into(),
                    read_only: false,
                }],
                requires: vec![],
                ready: Some(rt::Ready {
                    http: Some(rt::HttpProbe {
                        port: 8080,
                        path: "/".into(),
                    }),
                    tcp: None,
                    exec: None,
                    period_seconds: 10,
                    timeout_seconds: 5,
                    grace_seconds: 10,
                }),
            }
        );
    }

    #[test]
    fn radicale_prepares_its_volume_then_serves_as_its_own_user() {
        let c = plan(&manifest("radicale")).unwrap();
        let init = &c.oneshots["init-data"];
        assert_eq!(init.user.as_deref(), Some("root"));
        assert_eq!(init.workdir.as_deref(), Some("/"));
        assert_eq!(init.command[..2], strings(&["sh", "-c"]));
        assert_eq!(init.mounts[0].volume, "data");
        assert_eq!(init.ready, None);
        let radicale = &c.daemons["radicale"];
        assert_eq!(radicale.command, ["radicale"]);
        assert_eq!(radicale.user.as_deref(), Some("radicale"));
        assert_eq!(
            radicale.env,
            env(&[("PATH", "/usr/local/bin:/usr/bin:/bin")])
        );
        assert_eq!(radicale.requires, ["init-data"]);
        let ready = radicale.ready.as_ref().unwrap();
        assert_eq!(
            ready.http,
            Some(rt::HttpProbe {
                port: 5232,
                path: "/.web/".into()
            })
        );
        assert_eq!((ready.period_seconds, ready.grace_seconds), (10, 30));
        assert_eq!(c.start_order().unwrap(), ["init-data", "radicale"]);
        // What start-container reads back is what was planned.
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<rt::Config>(&json).unwrap(), c);
    }

    #[test]
    fn image_defaults_apply_where_the_process_is_silent() {
        let m = small(
            "  quiet:\n    image: main\n\
               \x20 loud:\n    image: main\n    command: [/own, arg]\n    workdir: /w\n    \
             user: root\n    env: {LANG: C.UTF-8, EXTRA: x}\n",
        );
        let c = plan(&m).unwrap();
        let quiet = &c.daemons["quiet"];
        assert_eq!(quiet.command, ["/entry", "serve"]);
        assert_eq!(quiet.env, env(&[("LANG", "C"), ("PATH", "/bin")]));
        assert_eq!(quiet.workdir.as_deref(), Some("/srv"));
        assert_eq!(quiet.user.as_deref(), Some("app"));
        let loud = &c.daemons["loud"];
        assert_eq!(loud.command, ["/own", "arg"]);
        assert_eq!(
            loud.env,
            env(&[("EXTRA", "x"), ("LANG", "C.UTF-8"), ("PATH", "/bin")])
        );
        assert_eq!(loud.workdir.as_deref(), Some("/w"));
        assert_eq!(loud.user.as_deref(), Some("root"));
    }

    #[test]
    fn requires_keep_their_order() {
        let m = small(
            "  a:\n    image: main\n    requires: [c, b]\n\
               \x20 b:\n    image: main\n\
               \x20 c:\n    image: main\n",
        );
        let c = plan(&m).unwrap();
        assert_eq!(c.daemons["a"].requires, ["c", "b"]);
        assert_eq!(c.start_order().unwrap(), ["b", "c", "a"]);
    }

    #[test]
    fn assets_and_dependency_mounts_are_refused_by_name() {
        for (mount, kind) in [
            ("{assets: true, path: /assets}", "assets"),
            (
                "{dependency: bitcoind, volume: main, path: /btc}",
                "dependency volume",
            ),
        ] {
            let m = small(&format!("  web:\n    image: main\n    mounts: [{mount}]\n"));
            let e = plan(&m).unwrap_err();
            assert!(matches!(e, PlanError::UnsupportedMount { .. }), "{e:?}");
            let e = e.to_string();
            for part in [
                "package \"small\"",
                "daemon \"web\"",
                kind,
                "not supported yet",
            ] {
                assert!(e.contains(part), "{part}: {e}");
            }
        }
        let m = small("  web:\n    image: main\n    mounts: [{path: /nothing}]\n");
        let e = plan(&m).unwrap_err().to_string();
        assert!(
            e.contains("daemon \"web\"") && e.contains("/nothing"),
            "{e}"
        );
        let m = small("  web:\n    image: main\n    mounts: [{volume: other, path: /o}]\n");
        let e = plan(&m).unwrap_err().to_string();
        assert!(e.contains("unknown volume \"other\""), "{e}");
    }

    /// Every field of every probe kind arrives, with its value: compared field by field and
    /// as JSON (the two types serialize alike, so a field only one side has shows here too).
    #[test]
    fn probes_map_every_field() {
        let probes = [
            sdk::Ready {
                http: Some(sdk::HttpProbe {
                    port: 8443,
                    path: "/healthz".into(),
                }),
                tcp: None,
                exec: None,
                period_seconds: 3,
                timeout_seconds: 2,
                grace_seconds: 45,
            },
            sdk::Ready {
                http: None,
                tcp: Some(sdk::TcpProbe { port: 65535 }),
                exec: None,
                period_seconds: 7,
                timeout_seconds: 6,
                grace_seconds: 0,
            },
            sdk::Ready {
                http: None,
                tcp: None,
                exec: Some(sdk::ExecProbe {
                    command: strings(&["pg_isready", "-q"]),
                }),
                period_seconds: 1,
                timeout_seconds: 1,
                grace_seconds: 9,
            },
        ];
        let m = small("");
        let images = image_configs(&m);
        let planner = Planner {
            manifest: &m,
            images: &images,
        };
        for sdk_ready in probes {
            let got = planner.ready("daemon \"d\"", &sdk_ready).unwrap();
            assert_eq!(got.period_seconds, sdk_ready.period_seconds);
            assert_eq!(got.timeout_seconds, sdk_ready.timeout_seconds);
            assert_eq!(got.grace_seconds, sdk_ready.grace_seconds);
            assert_eq!(
                got.http
                    .as_ref()
                    .map(|h| (u32::from(h.port), h.path.clone())),
                sdk_ready.http.as_ref().map(|h| (h.port, h.path.clone()))
            );
            assert_eq!(
                got.tcp.as_ref().map(|t| u32::from(t.port)),
                sdk_ready.tcp.as_ref().map(|t| t.port)
            );
            assert_eq!(
                got.exec.as_ref().map(|e| &e.command),
                sdk_ready.exec.as_ref().map(|e| &e.command)
            );
            assert_eq!(
                serde_json::to_value(&got).unwrap(),
                serde_json::to_value(&sdk_ready).unwrap()
            );
        }
    }

    #[test]
    fn a_probe_port_outside_tcp_is_refused() {
        for port in ["0", "70000"] {
            let m = small(&format!(
                "  web:\n    image: main\n    ready: {{tcp: {{port: {port}}}}}\n"
            ));
            let e = plan(&m).unwrap_err().to_string();
            assert!(
                e.contains("daemon \"web\"") && e.contains(&format!("port {port}")),
                "{e}"
            );
        }
    }

    #[test]
    fn what_start_container_would_refuse_is_refused_here() {
        let m = small("  web:\n    image: main\n    requires: [ghost]\n");
        let e = plan(&m).unwrap_err().to_string();
        assert!(
            e.contains("package \"small\"") && e.contains("requires unknown \"ghost\""),
            "{e}"
        );
        let m = small("  web:\n    image: nope\n");
        let e = plan(&m).unwrap_err().to_string();
        assert!(
            e.contains("image \"nope\" has no image configuration"),
            "{e}"
        );
        let mut m = small("  web:\n    image: main\n");
        m.volumes.push("../../etc".into());
        let e = plan(&m).unwrap_err().to_string();
        assert!(e.contains("volume id \"../../etc\""), "{e}");
    }

    #[test]
    fn an_action_runs_through_exec_in_with_its_image_defaults() {
        let m = manifest("hello-world");
        let a = action_exec(&m, &image_configs(&m), "set-greeting").unwrap();
        let script = m.actions["set-greeting"].command[2].clone();
        let binds = r#"[{"source":"/volumes/data","target":"/data","readOnly":false}]"#;
        assert_eq!(
            a.argv,
            [
                "/start-container",
                "exec-in",
                "--root",
                "/images/main",
                "--binds",
                binds,
                "--effects",
                "/run/startos",
                "--user",
                "root",
                "--workdir",
                "/",
                "--",
                "sh",
                "-c",
                &script,
            ]
        );
        assert_eq!(a.env, env(&[("PATH", "/bin")]));

        let m = manifest("radicale");
        let paths = Paths {
            binary: "/host/start-container".into(),
            images: "/host/images".into(),
            volumes: "/host/volumes".into(),
            status_file: "/host/run/status.json".into(),
            log_dir: "/host/run/logs".into(),
            control_file: "/host/control/run-state".into(),
            effects: None,
        };
        let a = action_exec_at(&paths, &m, &image_configs(&m), "set-password").unwrap();
        assert_eq!(
            a.argv[..4],
            strings(&[
                "/host/start-container",
                "exec-in",
                "--root",
                "/host/images/main"
            ])
        );
        assert!(a.argv[5].contains("/host/volumes/data"), "{:?}", a.argv);
        assert_eq!(a.argv[a.argv.len() - 2..], strings(&["--", "set-password"]));
        assert_eq!(a.env, env(&[("PATH", "/usr/local/bin:/usr/bin:/bin")]));

        let e = action_exec(&m, &image_configs(&m), "nope")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "package \"radicale\": no action \"nope\"");
    }

    #[test]
    fn an_action_without_path_gets_the_default_one() {
        let mut m = manifest("radicale");
        let mut images = image_configs(&m);
        images.get_mut("main").unwrap().env.clear();
        m.actions.get_mut("set-password").unwrap().mounts.clear();
        let a = action_exec(&m, &images, "set-password").unwrap();
        assert_eq!(a.env["PATH"], container_runtime::exec_in::DEFAULT_PATH);
        assert!(!a.argv.contains(&"--binds".to_string()), "{:?}", a.argv);
        m.actions.get_mut("set-password").unwrap().command.clear();
        let e = action_exec(&m, &images, "set-password")
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty command"), "{e}");
    }

    #[test]
    fn the_init_runs_the_supervisor_on_the_config() {
        assert_eq!(
            init_command(),
            [
                "/start-container",
                "run",
                "--config",
                "/etc/start-container/config.json"
            ]
        );
        assert_eq!(Paths::default(), Paths::in_container());
    }
}
