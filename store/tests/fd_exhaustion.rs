//! Out of file descriptors, a listing fails: that failure must never read as an empty
//! `desired/` (which deletes every object). Its own test binary: it lowers the process's
//! descriptor limit and exhausts it from another thread.

mod common;

use std::{
    fs::File,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Fixture, package_yaml};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use store::Store;

/// How long scans race the exhaustion. Before the fix a Package was deleted well within it.
const RACE_FOR: Duration = Duration::from_secs(6);
const PACKAGES: usize = 5;

/// Takes every free descriptor, holds them a moment, gives them back, until `stop`.
fn exhaust_until(stop: &AtomicBool) -> u64 {
    let mut cycles = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut held = Vec::new();
        while let Ok(f) = File::open("/dev/null") {
            held.push(f);
        }
        for _ in 0..(cycles % 50) {
            std::thread::yield_now();
        }
        drop(held);
        for _ in 0..(cycles % 7) {
            std::thread::yield_now();
        }
        cycles += 1;
    }
    cycles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_never_deletes_objects() {
    let f = Fixture::new().await;
    for i in 0..PACKAGES {
        let name = format!("p{i}");
        f.write(
            &format!("desired/packages/{name}.yaml"),
            &package_yaml(&name, "^1.0"),
        );
    }
    f.store.resync().await.unwrap();
    let pkg = crds::kind_by_name("Package").unwrap();
    let old = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(256),
            maximum: old.maximum,
        },
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let exhauster = {
        let stop = stop.clone();
        std::thread::spawn(move || exhaust_until(&stop))
    };
    let deadline = tokio::time::Instant::now() + RACE_FOR;
    let mut scans = (0u32, 0u32);
    let mut lost = None;
    while tokio::time::Instant::now() < deadline && lost.is_none() {
        match f.store.resync().await {
            Ok(()) => scans.0 += 1,
            Err(_) => scans.1 += 1,
        }
        let listed = f.store.list(pkg).await.unwrap();
        if listed.items.len() < PACKAGES {
            lost = Some(listed.items.len());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let cycles = exhauster.join().unwrap();
    setrlimit(Resource::Nofile, old).unwrap();
    eprintln!(
        "{} scans ok, {} failed, {cycles} exhaustion cycles",
        scans.0, scans.1
    );
    if let Some(left) = lost {
        panic!("running out of descriptors deleted packages: {left} of {PACKAGES} left");
    }
    assert!(
        scans.1 > 0,
        "the scans never met the exhaustion: the test proves nothing"
    );
}
