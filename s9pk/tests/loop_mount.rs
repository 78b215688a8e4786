//! Squashfs members must be loop-mountable straight out of the archive by offset and size.
//! Needs root, `mount`, `mksquashfs` (apt `squashfs-tools`) and loop devices; otherwise it
//! prints a skip note, or fails under CI (env var `CI`), where all of them must be there.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use s9pk::ArchiveBuilder;

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Unmounts on drop, so a failing assertion never leaves a mount behind.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn squashfs_member_loop_mounts_by_offset() {
    const TEST: &str = "squashfs_member_loop_mounts_by_offset";
    let missing = if !is_root() {
        Some("needs root to mount".to_owned())
    } else if !have("mksquashfs", "-version") {
        Some("needs mksquashfs (apt-get install squashfs-tools)".to_owned())
    } else if !have("mount", "--version") {
        Some("needs mount (apt-get install mount)".to_owned())
    } else if !Path::new("/dev/loop-control").exists() {
        Some("needs loop devices (/dev/loop-control)".to_owned())
    } else {
        None
    };
    if !tool_available(TEST, missing) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hello.txt"), b"hello from inside the s9pk\n").unwrap();
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("blob.bin"), &big).unwrap();
    let img = tmp.path().join("main.squashfs");
    let st = Command::new("mksquashfs")
        .arg(&src)
        .arg(&img)
        .args(["-noappend", "-quiet", "-no-progress", "-all-root"])
        .status()
        .unwrap();
    assert!(st.success(), "mksquashfs failed");

    let mut b = ArchiveBuilder::new();
    // An odd-sized member first, so alignment actually has to insert padding.
    b.add_bytes("manifest.json", b"{\"id\":\"loop\"}".to_vec())
        .unwrap();
    b.add_file("images/x86_64/main.squashfs", img.clone())
        .unwrap();
    let pkg = tmp.path().join("pkg.s9pk");
    let mut f = std::fs::File::create(&pkg).unwrap();
    b.write_to(&test_key(), &mut f, &|_| {}).unwrap();
    drop(f);

    let a = open(&pkg).unwrap();
    let (offset, len) = a.member_range("images/x86_64/main.squashfs").unwrap();
    assert_eq!(offset % 4096, 0);
    a.verify_member("images/x86_64/main.squashfs").unwrap();

    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = Command::new("mount")
        .args(["-t", "squashfs", "-o"])
        .arg(format!("loop,ro,offset={offset},sizelimit={len}"))
        .arg(&pkg)
        .arg(&mnt)
        .output()
        .unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // Containers without loop support report it at mount time; that is an environment
        // limit, not a format bug.
        if (err.contains("failed to setup loop device")
            || err.contains("permission denied")
            || err.contains("not permitted"))
            && !tool_available(TEST, Some(format!("loop mount refused: {}", err.trim())))
        {
            return;
        }
        panic!("mount failed: {err}");
    }
    let _guard = Mounted(&mnt);
    println!(
        "mounted images/x86_64/main.squashfs from the .s9pk at offset={offset} sizelimit={len}"
    );
    assert_eq!(
        std::fs::read(mnt.join("etc/hello.txt")).unwrap(),
        b"hello from inside the s9pk\n"
    );
    assert!(std::fs::read(mnt.join("blob.bin")).unwrap() == big);
}
