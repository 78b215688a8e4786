//! End to end on the real kernel (as root): a busybox image packed to squashfs,
//! loop-mounted by offset out of a larger file, an overlay on it as the rootfs, an
//! unprivileged id-mapped container on a throwaway bridge, reached over HTTP from the host,
//! and every trace of it gone afterwards.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use host::idmap::{IdRanges, ensure_subid};
use host::lxc::{
    BindMount, ContainerSpec, ExecRequest, IdMap, Limits, Lxc, LxcCli, NetworkSpec, Security,
    State, StopMode,
};
use host::mount::{MountCli, Mounter};
use host::net::{AddressPlan, IpCli, Ipv4Cidr, Network};
use support::{Teardown, busybox_rootfs, chmod, require, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const PAGE: &str = "hello from the container\n";
const PADDING: usize = 4096;
const MEMORY: u64 = 64 << 20;
/// LXC's stock seccomp policy, shipped with the `lxc` package.
const SECCOMP: &str = "/usr/share/lxc/config/common.seccomp";

/// Packs `rootfs` and writes it into `archive` between 4096 bytes of padding and 4096 bytes
/// of garbage, as an image member sits inside a package archive. Returns its size.
fn pack_padded(rootfs: &Path, squashfs: &Path, archive: &Path) -> u64 {
    let (r, s) = (rootfs.to_str().unwrap(), squashfs.to_str().unwrap());
    run(&[
        "mksquashfs",
        r,
        s,
        "-all-root",
        "-noappend",
        "-no-progress",
        "-quiet",
    ]);
    let image = std::fs::read(squashfs).unwrap();
    let mut bytes = vec![0u8; PADDING];
    bytes.extend_from_slice(&image);
    bytes.extend(std::iter::repeat_n(0xAA, PADDING));
    std::fs::write(archive, bytes).unwrap();
    image.len() as u64
}

async fn http_get(ip: Ipv4Addr, deadline: Duration) -> String {
    let until = Instant::now() + deadline;
    // httpd binds a moment after init starts; there is no event to wait on but the port.
    let mut stream = loop {
        match tokio::net::TcpStream::connect((ip, 80)).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < until => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("connecting to {ip}:80: {e}"),
        }
    };
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(deadline, stream.read_to_string(&mut reply))
        .await
        .expect("http reply in time")
        .unwrap();
    reply
}

/// The host uids of a process: real, effective, saved, filesystem.
fn uids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect()
}

/// The memory limit the kernel applies to `pid`, from its memory cgroup (v1 or v2).
fn memory_limit(pid: u32) -> u64 {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = cgroups.lines().find_map(|l| {
        let (_, rest) = l.split_once(':')?;
        let (ctrl, path) = rest.split_once(':')?;
        ctrl.split(',')
            .any(|c| c == "memory")
            .then(|| path.to_owned())
    });
    let file = match v1 {
        Some(path) => format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"),
        None => {
            let path = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            format!("/sys/fs/cgroup{path}/memory.max")
        }
    };
    std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits until `check` holds, polling: the kernel frees a stopped container's veth, and
/// the file system its mount namespace held, in the background and offers nothing to wait
/// on.
async fn eventually<F: Fn() -> bool>(what: &str, check: F) {
    let until = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < until, "{what} within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Paths {
    root: PathBuf,
    archive: PathBuf,
    image: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    rootfs: PathBuf,
    volume: PathBuf,
    lxc: PathBuf,
}

fn layout(root: &Path) -> Paths {
    let p = |s: &str| root.join(s);
    let paths = Paths {
        root: root.to_owned(),
        archive: p("package.s9pk"),
        image: p("image"),
        upper: p("upper"),
        work: p("work"),
        rootfs: p("rootfs"),
        volume: p("volume"),
        lxc: p("lxc"),
    };
    for dir in [
        &paths.image,
        &paths.upper,
        &paths.work,
        &paths.rootfs,
        &paths.volume,
    ] {
        std::fs::create_dir(dir).unwrap();
    }
    // The container's root (host uid 100000 and up) must be able to walk to its rootfs.
    chmod(root, 0o755);
    paths
}

/// Packs a busybox image and mounts it by offset out of the padded archive, read-only.
async fn mount_image(paths: &Paths, mounter: &MountCli, teardown: &mut Teardown) {
    let build = paths.root.join("build");
    busybox_rootfs(&build, PAGE);
    let size = pack_padded(&build, &paths.root.join("image.sqfs"), &paths.archive);
    teardown.loop_devices(&paths.archive);
    teardown.mount(&paths.image);
    let t = Instant::now();
    mounter
        .mount_squashfs(&paths.archive, PADDING as u64, size, &paths.image)
        .await
        .unwrap();
    eprintln!("timing: squashfs loop mount {:?}", t.elapsed());
    let page = std::fs::read_to_string(paths.image.join("www/index.html")).unwrap();
    assert_eq!(page, PAGE);
    let loops = mounter.list_loop_devices(&paths.root).await.unwrap();
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(
        (loops[0].offset, loops[0].size_limit),
        (PADDING as u64, size)
    );
    let write = std::fs::write(paths.image.join("x"), "x").unwrap_err();
    assert_eq!(
        write.raw_os_error(),
        Some(30),
        "image must be read-only: {write}"
    );
}

/// The overlay rootfs, and a volume owned by the container's root; checks that a
/// read-only bind refuses writes on the way.
async fn prepare_rootfs(paths: &Paths, mounter: &MountCli, teardown: &mut Teardown, ids: IdMap) {
    teardown.mount(&paths.rootfs);
    let lower = std::slice::from_ref(&paths.image);
    mounter
        .mount_overlay(lower, &paths.upper, &paths.work, &paths.rootfs)
        .await
        .unwrap();
    // LXC maps ids through newuidmap when it is installed, also for root.
    for file in ["/etc/subuid", "/etc/subgid"] {
        ensure_subid(Path::new(file), "root", ids.host_base, ids.count).unwrap();
    }
    std::fs::write(paths.volume.join("hello"), "hello-volume\n").unwrap();
    chmod(&paths.volume.join("hello"), 0o644);
    let owner = format!("{0}:{0}", ids.host_base);
    run(&["chown", &owner, paths.volume.to_str().unwrap()]);

    let ro = paths.root.join("volume-ro");
    std::fs::create_dir(&ro).unwrap();
    teardown.mount(&ro);
    mounter.bind(&paths.volume, &ro, true).await.unwrap();
    let write = std::fs::write(ro.join("y"), "y").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(30), "read-only bind: {write}");
    mounter.unmount(&ro).await.unwrap();
}

async fn bridge_up(net: &IpCli, bridge: &str, teardown: &mut Teardown) -> Ipv4Cidr {
    let cidr: Ipv4Cidr = support::free_subnet(std::process::id()).parse().unwrap();
    teardown.bridge(bridge);
    net.ensure_bridge(bridge, cidr).await.unwrap();
    net.ensure_bridge(bridge, cidr).await.unwrap();
    let info = net.bridge(bridge).await.unwrap().unwrap();
    assert!(info.up && info.addresses == vec![cidr], "{info:?}");
    cidr
}

fn httpd_spec(
    name: &str,
    paths: &Paths,
    ids: IdMap,
    bridge: &str,
    cidr: Ipv4Cidr,
) -> ContainerSpec {
    let plan = AddressPlan::new(cidr);
    ContainerSpec {
        name: name.to_owned(),
        rootfs: paths.rootfs.clone(),
        init: ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]
            .map(String::from)
            .to_vec(),
        idmap: Some(ids),
        network: Some(NetworkSpec {
            bridge: bridge.to_owned(),
            address: plan.allocate(name, &BTreeMap::new()).unwrap(),
            prefix_len: cidr.prefix_len,
            gateway: plan.gateway(),
        }),
        limits: Limits {
            memory_bytes: Some(MEMORY),
            cpu_micros: Some(500_000),
            pids: Some(64),
        },
        mounts: vec![BindMount {
            source: paths.volume.clone(),
            target: "/data".into(),
            read_only: false,
        }],
        security: Security {
            apparmor_profile: std::env::var("HOST_TEST_APPARMOR").ok(),
            seccomp_profile: Some(SECCOMP.into()).filter(|p: &PathBuf| p.is_file()),
        },
    }
}

/// The running container: mapped uids, its limit, HTTP from the host, a one-off command
/// writing to the volume as the mapped root, one port on the bridge.
async fn check_running(lxc: &LxcCli, spec: &ContainerSpec, paths: &Paths, net: &IpCli) {
    let (name, ids) = (&spec.name, spec.idmap.unwrap());
    let address = spec.network.as_ref().unwrap().address;
    assert_eq!(lxc.state(name).await.unwrap(), Some(State::Running));
    assert_eq!(lxc.list().await.unwrap(), vec![name.clone()]);
    let info = lxc.info(name).await.unwrap();
    let pid = info.pid.expect("init pid");
    assert!(info.ips.contains(&IpAddr::V4(address)), "{info:?}");
    assert_eq!(
        uids(pid),
        vec![ids.host_base; 4],
        "init runs as the mapped root"
    );
    assert_eq!(memory_limit(pid), MEMORY);

    let reply = http_get(address, Duration::from_secs(5)).await;
    assert!(
        reply.starts_with("HTTP/1.") && reply.ends_with(PAGE),
        "{reply}"
    );

    let t = Instant::now();
    // The environment is the request's (nothing of the host's; LXC adds `container=lxc`
    // and the shell PWD and SHLVL), a value
    // with spaces, quotes and a newline arrives intact, and stdin carries the input.
    let script = "id -u; cat /data/hello; echo w > /data/out; \
                  env | sort; printf '[%s]' \"$TRICKY\"; echo; cat; exit 7";
    let argv = ["/bin/busybox", "sh", "-c", script].map(String::from);
    let mut request = ExecRequest::new(argv.to_vec(), Duration::from_secs(10));
    request.env = BTreeMap::from([
        ("GREETING".to_owned(), "hi".to_owned()),
        ("PATH".to_owned(), "/bin".to_owned()),
        ("TRICKY".to_owned(), "a 'b' \"c\"\nd=e".to_owned()),
    ]);
    request.stdin = b"{\"secret\":\"s3cr3t\"}".to_vec();
    let out = lxc.exec(name, &request).await.unwrap();
    eprintln!("timing: exec {:?}", t.elapsed());
    let got = (out.code, out.stdout.as_str());
    let expected = "0\nhello-volume\nGREETING=hi\nPATH=/bin\nPWD=/\nSHLVL=1\nTRICKY=a 'b' \"c\"\n\
                    container=lxc\nd=e\n\
                    [a 'b' \"c\"\nd=e]\n{\"secret\":\"s3cr3t\"}";
    assert_eq!(got, (Some(7), expected), "{out:?}");
    // No input: stdin is empty, not the test's terminal.
    let argv = ["/bin/busybox", "sh", "-c", "wc -c"].map(String::from);
    let request = ExecRequest::new(argv.to_vec(), Duration::from_secs(10));
    let out = lxc.exec(name, &request).await.unwrap();
    assert_eq!((out.code, out.stdout.trim()), (Some(0), "0"), "{out:?}");
    // A hung command is killed at its deadline.
    let argv = ["/bin/busybox", "sleep", "30"].map(String::from);
    let request = ExecRequest::new(argv.to_vec(), Duration::from_millis(500));
    let err = lxc.exec(name, &request).await.unwrap_err();
    assert!(err.to_string().contains("did not finish"), "{err}");
    // ...and so is the command it ran in the container, not only lxc-attach.
    let argv = ["/bin/busybox", "ps"].map(String::from);
    let request = ExecRequest::new(argv.to_vec(), Duration::from_secs(10));
    let out = lxc.exec(name, &request).await.unwrap();
    assert!(!out.stdout.contains("sleep 30"), "{}", out.stdout);
    let argv = ["/bin/busybox", "ps"].map(String::from);
    let request = ExecRequest::new(argv.to_vec(), Duration::from_secs(10));
    let out = lxc.exec(name, &request).await.unwrap();
    eprintln!("after the timeout: {}", out.stdout);
    let written = std::fs::metadata(paths.volume.join("out")).unwrap();
    assert_eq!(written.uid(), ids.host_base);
    let bridge = &spec.network.as_ref().unwrap().bridge;
    let ports = net.list_ports(bridge).await.unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
}

/// Stops and destroys the container, unmounts everything found under the test's
/// directory and removes the bridge, asserting each is really gone.
async fn tear_down(lxc: &LxcCli, name: &str, paths: &Paths, bridge: &str) {
    let (mounter, net) = (MountCli::new(), IpCli::new());
    let t = Instant::now();
    let graceful = StopMode::Graceful(Duration::from_secs(1));
    lxc.stop(name, graceful).await.unwrap();
    eprintln!("timing: stop (graceful 1 s, then kill) {:?}", t.elapsed());
    assert_eq!(lxc.state(name).await.unwrap(), Some(State::Stopped));
    let t = Instant::now();
    lxc.destroy(name).await.unwrap();
    eprintln!("timing: destroy {:?}", t.elapsed());

    assert_eq!(lxc.state(name).await.unwrap(), None);
    assert!(lxc.list().await.unwrap().is_empty());
    assert!(!paths.lxc.join(name).exists());
    let left = support::lxc_cgroups(name);
    assert!(left.is_empty(), "cgroups left: {left:?}");
    let sys_ports = PathBuf::from(format!("/sys/class/net/{bridge}/brif"));
    eventually("the veth is gone", || {
        std::fs::read_dir(&sys_ports).is_ok_and(|d| d.count() == 0)
    })
    .await;
    assert!(net.list_ports(bridge).await.unwrap().is_empty());
    for mount in mounter.list_mounts(&paths.root).await.unwrap() {
        mounter.unmount(&mount.mount_point).await.unwrap();
    }
    assert!(mounter.list_mounts(&paths.root).await.unwrap().is_empty());
    // `unmount` waits a few seconds for the loop device; on a loaded machine the dying
    // container's mount namespace can hold the image longer, and the device must still go.
    eventually("the loop device is released", || {
        support::loop_backing_files()
            .iter()
            .all(|f| !f.starts_with(&paths.root))
    })
    .await;
    assert!(
        mounter
            .list_loop_devices(&paths.root)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(net.remove_bridge(bridge).await.unwrap());
    assert!(net.bridge(bridge).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_container_runs_from_a_loop_mounted_image_and_leaves_nothing() {
    let tools = [
        "lxc-start",
        "mksquashfs",
        "busybox",
        "ip",
        "mount",
        "losetup",
    ];
    if !require(&tools) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let paths = layout(tmp.path());
    let mut teardown = Teardown::default();
    let id = std::process::id();
    let name = format!("startos-e2e{id}");
    let bridge = format!("sth{}", id % 1_000_000);
    let (mounter, net) = (MountCli::new(), IpCli::new());

    mount_image(&paths, &mounter, &mut teardown).await;
    let ids = IdRanges::default()
        .allocate(&name, &BTreeMap::new())
        .unwrap();
    prepare_rootfs(&paths, &mounter, &mut teardown, ids).await;
    let cidr = bridge_up(&net, &bridge, &mut teardown).await;

    let lxc = LxcCli::new(&paths.lxc, "startos-").unwrap();
    let spec = httpd_spec(&name, &paths, ids, &bridge, cidr);
    teardown.container(&paths.lxc, &name);
    let t = Instant::now();
    lxc.create(&spec).await.unwrap();
    eprintln!("timing: create {:?}", t.elapsed());
    assert_eq!(lxc.state(&name).await.unwrap(), Some(State::Stopped));
    let t = Instant::now();
    lxc.start(&name).await.unwrap();
    eprintln!("timing: start {:?}", t.elapsed());
    lxc.start(&name)
        .await
        .expect("starting a running container is no error");

    check_running(&lxc, &spec, &paths, &net).await;
    tear_down(&lxc, &name, &paths, &bridge).await;
    teardown.disarm();
}
