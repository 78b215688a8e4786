use std::{
    fs,
    os::unix::fs::{PermissionsExt, symlink},
};

use fsio::{Dir, EntryKind, FsioError, write_atomic};
use rustix::fs::{FileType, Mode};

fn mkfifo(dir: &Dir, name: &str) {
    let d = fs::File::open(dir.path()).unwrap();
    rustix::fs::mknodat(&d, name, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
}

#[test]
fn open_file_refuses_a_symlink_without_reading_its_target() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("secret"), "root-only line\n").unwrap();
    symlink(tmp.path().join("secret"), tmp.path().join("a.yaml")).unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    let err = dir.read_file("a.yaml", 1024).unwrap_err();
    assert!(matches!(err, FsioError::Symlink { .. }), "{err}");
    assert!(!err.to_string().contains("root-only"), "{err}");
}

#[test]
fn open_file_refuses_a_fifo_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    mkfifo(&dir, "p.yaml");
    // No writer ever opens the FIFO: a blocking open would hang this test forever.
    let err = dir.read_file("p.yaml", 1024).unwrap_err();
    assert!(
        matches!(err, FsioError::NotRegular { found: "fifo", .. }),
        "{err}"
    );
    assert_eq!(
        dir.entry_kind("p.yaml").unwrap(),
        Some(EntryKind::Other("fifo"))
    );
}

#[test]
fn read_is_bounded_by_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("big"), vec![b'x'; 4097]).unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    assert!(matches!(
        dir.read_file("big", 4096),
        Err(FsioError::TooLarge { limit: 4096, .. })
    ));
    assert_eq!(dir.read_file("big", 4097).unwrap().len(), 4097);
}

#[test]
fn child_refuses_a_symlinked_directory() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("elsewhere")).unwrap();
    symlink(tmp.path().join("elsewhere"), tmp.path().join("packages")).unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    assert!(matches!(
        dir.child("packages"),
        Err(FsioError::Symlink { .. })
    ));
    assert!(matches!(
        dir.ensure_child("packages", 0o700),
        Err(FsioError::Symlink { .. })
    ));
    fs::write(tmp.path().join("file"), "").unwrap();
    assert!(matches!(
        dir.child("file"),
        Err(FsioError::NotDirectory {
            found: "regular file",
            ..
        })
    ));
    assert!(dir.child("missing").unwrap_err().is_not_found());
}

#[test]
fn remove_unlinks_the_link_not_its_target() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("target"), "keep").unwrap();
    symlink(tmp.path().join("target"), tmp.path().join("link")).unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    assert!(dir.remove("link").unwrap());
    assert!(!dir.remove("link").unwrap());
    assert_eq!(
        fs::read_to_string(tmp.path().join("target")).unwrap(),
        "keep"
    );
}

#[test]
fn atomic_write_sets_the_mode_and_leaves_no_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("record.json");
    write_atomic(&path, b"one", 0o600).unwrap();
    write_atomic(&path, b"two", 0o600).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"two");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn a_dropped_stage_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    dir.write_atomic("a", b"old", 0o644).unwrap();
    let staged = dir.stage("a", b"new", 0o644).unwrap();
    drop(staged);
    assert_eq!(fs::read(tmp.path().join("a")).unwrap(), b"old");
    let names: Vec<_> = dir.list().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["a"]);
}

#[test]
fn ensure_child_creates_with_the_mode_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    let child = dir.ensure_child("status", 0o700).unwrap();
    assert_eq!(child.mode().unwrap(), 0o700);
    assert_eq!(
        dir.ensure_child("status", 0o755).unwrap().mode().unwrap(),
        0o700
    );
    let listed = dir.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, EntryKind::Dir);
}

#[test]
fn remove_temporaries_keeps_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join(".tmp-1-2-a"), "").unwrap();
    fs::write(tmp.path().join("a"), "").unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    assert_eq!(dir.remove_temporaries().unwrap(), 1);
    assert!(tmp.path().join("a").exists());
}

#[test]
fn only_faults_of_the_machine_are_resource_faults() {
    let io = |errno: rustix::io::Errno| FsioError::Io {
        op: "open",
        path: "x".into(),
        source: errno.into(),
    };
    for fault in [rustix::io::Errno::MFILE, rustix::io::Errno::NOSPC] {
        assert!(io(fault).is_resource_fault(), "{fault:?}");
    }
    // A socket swapped in (ENXIO), a missing file, a refused one: verdicts on the file.
    for verdict in [
        rustix::io::Errno::NXIO,
        rustix::io::Errno::NOENT,
        rustix::io::Errno::ACCESS,
    ] {
        assert!(!io(verdict).is_resource_fault(), "{verdict:?}");
    }
    assert!(!FsioError::Symlink { path: "x".into() }.is_resource_fault());
}

#[test]
fn a_huge_file_is_refused_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fs::File::create(tmp.path().join("sparse")).unwrap();
    // Sparse: 64 GiB that would take minutes and all memory to read.
    f.set_len(64 << 30).unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    match dir.read_file("sparse", 1 << 20) {
        Err(FsioError::TooLarge { len, .. }) => assert_eq!(len, 64 << 30),
        other => panic!("{other:?}"),
    }
}

#[test]
fn remove_tree_removes_links_never_their_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("keep.txt"), "keep").unwrap();
    let tree = tmp.path().join("data/tree");
    fs::create_dir_all(tree.join("a/b/c")).unwrap();
    fs::write(tree.join("a/b/c/file"), "x").unwrap();
    fs::write(tree.join("top"), "y").unwrap();
    symlink(&outside, tree.join("a/link-to-dir")).unwrap();
    symlink(outside.join("keep.txt"), tree.join("a/b/link-to-file")).unwrap();
    let data = Dir::open(tmp.path().join("data")).unwrap();
    let d = fs::File::open(tree.join("a")).unwrap();
    rustix::fs::mknodat(&d, "fifo", FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();

    assert!(data.remove_tree("tree").unwrap());
    assert!(!tree.exists());
    assert_eq!(
        fs::read_to_string(outside.join("keep.txt")).unwrap(),
        "keep"
    );
    assert!(outside.join("sub").is_dir());
    assert!(!data.remove_tree("tree").unwrap(), "already gone");

    // A link in the place of the tree itself: the link goes, the target stays.
    symlink(&outside, tmp.path().join("data/tree")).unwrap();
    assert!(data.remove_tree("tree").unwrap());
    assert!(outside.join("keep.txt").exists());
}

#[test]
fn stage_from_is_read_back_before_commit_and_removed_when_dropped() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    let content = vec![5u8; 100_000];
    {
        let staged = dir
            .stage_from("big.bin", &mut content.as_slice(), 1 << 20, 0o600)
            .unwrap();
        let mut back = Vec::new();
        staged
            .open()
            .unwrap()
            .into_file()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, content);
        assert!(
            !tmp.path().join("big.bin").exists(),
            "nothing in place before commit"
        );
    }
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "dropped: removed"
    );
    let staged = dir
        .stage_from("big.bin", &mut content.as_slice(), 10, 0o600)
        .unwrap();
    staged.commit().unwrap();
    assert_eq!(fs::read(tmp.path().join("big.bin")).unwrap(), vec![5u8; 10]);
    let mode = fs::metadata(tmp.path().join("big.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
