//! On the real kernel (as root): what a crashed daemon leaves behind (a running
//! container, a mount, a loop device) is found by the listings alone, from fresh
//! instances that know nothing of it, and can be removed through them.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use host::idmap::{IdRanges, ensure_subid};
use host::lxc::{ContainerSpec, Limits, Lxc, LxcCli, LxcError, State};
use host::mount::{MountCli, Mounter};
use support::{Teardown, busybox_rootfs, chmod, require, run};

fn sleeper(name: &str, rootfs: &Path) -> ContainerSpec {
    ContainerSpec {
        name: name.to_owned(),
        rootfs: rootfs.to_owned(),
        init: ["/bin/busybox", "sleep", "600"].map(String::from).to_vec(),
        idmap: None,
        network: None,
        limits: Limits::default(),
        mounts: Vec::new(),
        security: Default::default(),
    }
}

#[tokio::test]
async fn orphans_are_found_by_listing_and_removed() {
    if !require(&["lxc-start", "busybox", "mount", "losetup"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    chmod(root, 0o755);
    let lxcpath = root.join("lxc");
    let rootfs = root.join("rootfs");
    busybox_rootfs(&rootfs, "orphan\n");
    let name = format!("startos-orphan{}", std::process::id());
    let mut teardown = Teardown::default();

    // What a previous daemon left: a running id-mapped container, a bind mount and an
    // unmounted loop device.
    {
        let ids = IdRanges::default()
            .allocate(&name, &BTreeMap::new())
            .unwrap();
        for file in ["/etc/subuid", "/etc/subgid"] {
            ensure_subid(Path::new(file), "root", ids.host_base, ids.count).unwrap();
        }
        let mut spec = sleeper(&name, &rootfs);
        spec.idmap = Some(ids);
        let lxc = LxcCli::new(&lxcpath, "startos-").unwrap();
        teardown.container(&lxcpath, &name);
        lxc.create(&spec).await.unwrap();
        lxc.start(&name).await.unwrap();
    }
    let target = root.join("mnt");
    std::fs::create_dir(&target).unwrap();
    teardown.mount(&target);
    run(&[
        "mount",
        "--bind",
        rootfs.to_str().unwrap(),
        target.to_str().unwrap(),
    ]);
    let backing = root.join("disk.img");
    std::fs::write(&backing, vec![0u8; 1 << 20]).unwrap();
    teardown.loop_devices(&backing);
    run(&[
        "losetup",
        "--find",
        "--read-only",
        backing.to_str().unwrap(),
    ]);
    // A container of someone else under the same path is not ours to list.
    std::fs::create_dir_all(lxcpath.join("other")).unwrap();
    std::fs::write(lxcpath.join("other/config"), "").unwrap();

    let lxc = LxcCli::new(&lxcpath, "startos-").unwrap();
    let mounter = MountCli::new();
    assert_eq!(lxc.list().await.unwrap(), vec![name.clone()]);
    assert_eq!(lxc.state(&name).await.unwrap(), Some(State::Running));
    let mounts = mounter.list_mounts(root).await.unwrap();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].mount_point, target);
    let loops = mounter.list_loop_devices(root).await.unwrap();
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(loops[0].backing_file, backing);

    for orphan in lxc.list().await.unwrap() {
        lxc.destroy(&orphan).await.unwrap();
    }
    for mount in mounter.list_mounts(root).await.unwrap() {
        mounter.unmount(&mount.mount_point).await.unwrap();
    }
    for device in mounter.list_loop_devices(root).await.unwrap() {
        mounter.detach_loop(&device.device).await.unwrap();
    }
    assert!(lxc.list().await.unwrap().is_empty());
    let left = support::lxc_cgroups(&name);
    assert!(left.is_empty(), "cgroups left: {left:?}");
    assert!(mounter.list_mounts(root).await.unwrap().is_empty());
    assert!(mounter.list_loop_devices(root).await.unwrap().is_empty());
    teardown.disarm();
}

#[tokio::test]
async fn a_failed_start_names_the_container_the_command_and_lxc_s_reason() {
    if !require(&["lxc-start"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lxcpath = tmp.path().join("lxc");
    let name = format!("startos-broken{}", std::process::id());
    let lxc = LxcCli::new(&lxcpath, "startos-").unwrap();
    let mut teardown = Teardown::default();
    teardown.container(&lxcpath, &name);
    lxc.create(&sleeper(&name, &tmp.path().join("no-such-rootfs")))
        .await
        .unwrap();
    // Retried like a controller would: nothing may pile up per attempt.
    for _ in 0..3 {
        assert!(lxc.start(&name).await.is_err());
    }
    let err = lxc.start(&name).await.unwrap_err();
    assert!(matches!(err, LxcError::Start { .. }), "{err:?}");
    // The log holds the latest start only, however often it is retried.
    let log = std::fs::read_to_string(lxcpath.join(&name).join("lxc.log")).unwrap();
    let starts = log.matches("wait_on_daemonized_start").count();
    assert_eq!(starts, 1, "{log}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("container {name}: `lxc-start -P ")),
        "{text}"
    );
    assert!(
        text.contains("no-such-rootfs"),
        "lxc's log should name the rootfs: {text}"
    );
    assert!(text.len() < 12_000, "bounded: {} bytes", text.len());
    assert_eq!(lxc.state(&name).await.unwrap(), Some(State::Stopped));
    lxc.destroy(&name).await.unwrap();
    assert_eq!(lxc.state(&name).await.unwrap(), None);
    // LXC's monitor cannot remove its own cgroup when a start fails; a controller that
    // retries a broken container would pile up one per attempt and hierarchy.
    let left = support::lxc_cgroups(&name);
    assert!(left.is_empty(), "cgroups left: {left:?}");
    // Destroying what is gone is no error.
    lxc.destroy(&name).await.unwrap();
}
