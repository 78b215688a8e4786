//! On the real kernel (as root): a graceful stop reaches the container's init as SIGTERM
//! (LXC's default halt signal, SIGPWR, is ignored by most programs), so a service can save
//! its state before it goes; a signal to init (`Lxc::signal`) reaches it and stops nothing.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use host::idmap::{IdRanges, ensure_subid};
use host::lxc::{BindMount, ContainerSpec, Limits, Lxc, LxcCli, State, StopMode};
use support::{Teardown, busybox_rootfs, chmod, require, run};
use tokio::time::Instant;

/// Waits for SIGTERM, then leaves a mark in the volume and exits.
const INIT: &str = "trap 'echo usr1 >> /data/signals' USR1\ntrap 'echo stopped > /data/mark; exit 0' TERM\nwhile :; do sleep 1; done\n";

#[tokio::test]
async fn a_graceful_stop_delivers_sigterm_to_init() {
    if !require(&["lxc-start", "busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    chmod(root, 0o755);
    let (rootfs, volume, lxcpath) = (root.join("rootfs"), root.join("volume"), root.join("lxc"));
    busybox_rootfs(&rootfs, "");
    std::fs::write(rootfs.join("init.sh"), INIT).unwrap();
    chmod(&rootfs.join("init.sh"), 0o755);
    std::fs::create_dir(&volume).unwrap();
    let name = format!("startos-term{}", std::process::id());
    let ids = IdRanges::default()
        .allocate(&name, &BTreeMap::new())
        .unwrap();
    for file in ["/etc/subuid", "/etc/subgid"] {
        ensure_subid(Path::new(file), "root", ids.host_base, ids.count).unwrap();
    }
    run(&[
        "chown",
        &format!("{0}:{0}", ids.host_base),
        volume.to_str().unwrap(),
    ]);

    let lxc = LxcCli::new(&lxcpath, "startos-").unwrap();
    let spec = ContainerSpec {
        name: name.clone(),
        rootfs,
        init: ["/bin/busybox", "sh", "/init.sh"]
            .map(String::from)
            .to_vec(),
        idmap: Some(ids),
        network: None,
        limits: Limits::default(),
        mounts: vec![BindMount {
            source: volume.clone(),
            target: "/data".into(),
            read_only: false,
        }],
        security: Default::default(),
    };
    let mut teardown = Teardown::default();
    teardown.container(&lxcpath, &name);
    lxc.create(&spec).await.unwrap();
    lxc.start(&name).await.unwrap();
    // A signal to init is a request, not a stop.
    lxc.signal(&name, rustix::process::Signal::USR1)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(volume.join("signals")).unwrap_or_default() != "usr1\n" {
        assert!(Instant::now() < deadline, "init never saw SIGUSR1");
        // The file has no event to wait on from here (a mapped owner, a trap that runs
        // between sleeps): poll with a deadline.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lxc.state(&name).await.unwrap(), Some(State::Running));
    let t = Instant::now();
    lxc.stop(&name, StopMode::Graceful(Duration::from_secs(20)))
        .await
        .unwrap();
    eprintln!(
        "timing: graceful stop of an init that handles SIGTERM {:?}",
        t.elapsed()
    );
    assert_eq!(lxc.state(&name).await.unwrap(), Some(State::Stopped));
    let mark = std::fs::read_to_string(volume.join("mark")).expect("init saw SIGTERM");
    assert_eq!(mark, "stopped\n");
    let err = lxc
        .signal(&name, rustix::process::Signal::USR1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not running"), "{err}");
    lxc.destroy(&name).await.unwrap();
    teardown.disarm();
}
