//! Removing containers: one that is being deleted, and every container, mount and loop
//! device under our directories that no `Container` object owns (left by a crash between
//! two steps, or by a `Container` deleted while the daemon was down).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use host::lxc::StopMode;

use super::Host;

/// Stops and destroys container `name` (LXC name `lxc_name`), unmounts everything below
/// its directory and removes the directory. Idempotent; volumes are not touched.
pub async fn remove_container(
    host: &Host,
    name: &str,
    lxc_name: &str,
    stop_timeout: Duration,
) -> Result<(), String> {
    let lxc = &host.lxc;
    if lxc
        .state(lxc_name)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        lxc.stop(lxc_name, StopMode::Graceful(stop_timeout))
            .await
            .map_err(|e| e.to_string())?;
        lxc.destroy(lxc_name).await.map_err(|e| e.to_string())?;
    }
    let dir = host.layout.container(name);
    unmount_below(host, dir.path()).await?;
    let path = dir.path().to_owned();
    tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&path) {
        // remove_dir_all removes links, never what they point to.
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!(
            "container {}: removing {}: {e}",
            path.display(),
            path.display()
        )),
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(())
}

async fn unmount_below(host: &Host, dir: &Path) -> Result<(), String> {
    // Deepest first, as listed.
    for mount in host
        .mounter
        .list_mounts(dir)
        .await
        .map_err(|e| e.to_string())?
    {
        host.mounter
            .unmount(&mount.mount_point)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// What a sweep removed, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub containers: Vec<String>,
    pub directories: Vec<String>,
    pub loop_devices: Vec<String>,
}

/// Removes every LXC container (with our prefix), container directory and mount below it
/// whose name `live` does not return, then detaches loop devices on our archives that
/// nothing mounts any more. What exists on the host is listed *before* `live` is asked,
/// so a container made for an object created meanwhile is never taken for an orphan.
/// `mounting` is taken exclusively while loop devices are looked at: whoever mounts an
/// image holds it shared, from attaching the device to mounting it.
pub async fn sweep<F, Fut>(
    host: &Host,
    live: F,
    mounting: &tokio::sync::RwLock<()>,
    stop_timeout: Duration,
) -> Result<Swept, String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<BTreeSet<String>, String>>,
{
    let mut swept = Swept::default();
    let lxc_names = host.lxc.list().await.map_err(|e| e.to_string())?;
    let containers = host.layout.containers();
    let dir_names: Vec<String> = match std::fs::read_dir(&containers) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("listing {}: {e}", containers.display())),
    };
    let live = live().await?;
    for lxc_name in lxc_names {
        let Some(name) = lxc_name.strip_prefix(&host.prefix) else {
            continue;
        };
        if !live.contains(name) {
            remove_container(host, name, &lxc_name, stop_timeout).await?;
            swept.containers.push(name.to_owned());
        }
    }
    for name in dir_names {
        if !live.contains(&name) && !swept.containers.contains(&name) {
            let lxc_name = format!("{}{name}", host.prefix);
            remove_container(host, &name, &lxc_name, stop_timeout).await?;
            swept.directories.push(name);
        }
    }
    let _no_mounts = mounting.write().await;
    let mounted: BTreeSet<_> = host
        .mounter
        .list_mounts(&containers)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|m| m.source)
        .collect();
    for dev in host
        .mounter
        .list_loop_devices(&host.layout.archives())
        .await
        .map_err(|e| e.to_string())?
    {
        let device = dev.device.to_string_lossy().into_owned();
        if !mounted.contains(&device) {
            host.mounter
                .detach_loop(&dev.device)
                .await
                .map_err(|e| e.to_string())?;
            swept.loop_devices.push(device);
        }
    }
    Ok(swept)
}
