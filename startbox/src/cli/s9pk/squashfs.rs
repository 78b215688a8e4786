//! Building squashfs members with `mksquashfs` (Debian `squashfs-tools`): from a directory,
//! from a rootfs tarball (streamed into `mksquashfs -tar`, decompressed by the usual tool
//! when compressed), or an existing squashfs used as is. `mksquashfs` keeps ownership,
//! permissions and extended attributes.

use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// The squashfs magic, `hsqs` (little-endian `0x73717368`).
pub const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";

/// Whether `mksquashfs` can be run.
pub fn mksquashfs_available() -> bool {
    Command::new("mksquashfs")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn mksquashfs() -> Command {
    let mut cmd = Command::new("mksquashfs");
    cmd.stdout(Stdio::null());
    cmd
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let output = match cmd.stdin(Stdio::null()).stderr(Stdio::piped()).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{what}: `mksquashfs` is not installed (apt-get install squashfs-tools)")
        }
        Err(e) => return Err(e).with_context(|| format!("{what}: cannot run mksquashfs")),
    };
    if !output.status.success() {
        bail!(
            "{what}: mksquashfs failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `mksquashfs SRC OUT -noappend -comp zstd -quiet`.
pub fn from_dir(src: &Path, out: &Path) -> Result<()> {
    if !src.is_dir() {
        bail!("{}: not a directory", src.display());
    }
    let mut cmd = mksquashfs();
    cmd.arg(src)
        .arg(out)
        .args(["-noappend", "-comp", "zstd", "-quiet", "-no-progress"]);
    run(cmd, &format!("{}", src.display()))
}

/// The decompressor for a tarball, from its first bytes: `None` for a plain tar.
pub fn tar_decompressor(head: &[u8]) -> Option<&'static [&'static str]> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(&["gzip", "-dc"])
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(&["xz", "-dc"])
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(&["zstd", "-dc"])
    } else if head.starts_with(b"BZh") {
        Some(&["bzip2", "-dc"])
    } else {
        None
    }
}

/// A (possibly compressed) rootfs tarball, streamed into `mksquashfs - OUT -tar`.
pub fn from_tarball(tarball: &Path, out: &Path) -> Result<()> {
    let what = format!("{}", tarball.display());
    let mut head = [0u8; 8];
    let n = File::open(tarball)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("cannot read {what}"))?;
    let input = File::open(tarball).with_context(|| format!("cannot read {what}"))?;
    let mut cmd = mksquashfs();
    cmd.arg("-").arg(out).args([
        "-tar",
        "-noappend",
        "-comp",
        "zstd",
        "-quiet",
        "-no-progress",
    ]);
    match tar_decompressor(&head[..n]) {
        None => {
            cmd.stdin(input);
            let output = cmd.stderr(Stdio::piped()).output().with_context(|| {
                format!("{what}: cannot run mksquashfs (apt-get install squashfs-tools)")
            })?;
            if !output.status.success() {
                bail!(
                    "{what}: mksquashfs -tar failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            Ok(())
        }
        Some(argv) => {
            let mut decompress = Command::new(argv[0])
                .args(&argv[1..])
                .stdin(input)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("{what}: cannot run {}", argv[0]))?;
            let pipe = decompress.stdout.take().context("decompressor stdout")?;
            cmd.stdin(pipe);
            let output = cmd.stderr(Stdio::piped()).output().with_context(|| {
                format!("{what}: cannot run mksquashfs (apt-get install squashfs-tools)")
            })?;
            let dec = decompress.wait_with_output()?;
            if !dec.status.success() {
                bail!(
                    "{what}: {} failed ({}): {}",
                    argv[0],
                    dec.status,
                    String::from_utf8_lossy(&dec.stderr).trim()
                );
            }
            if !output.status.success() {
                bail!(
                    "{what}: mksquashfs -tar failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            Ok(())
        }
    }
}

/// An existing squashfs: checked for the magic, used as is.
pub fn existing(path: &Path) -> Result<PathBuf> {
    let mut head = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if &head != SQUASHFS_MAGIC {
        bail!("{}: not a squashfs image (bad magic)", path.display());
    }
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompressor_by_magic() {
        assert_eq!(
            tar_decompressor(&[0x1f, 0x8b, 8]),
            Some(&["gzip", "-dc"][..])
        );
        assert_eq!(tar_decompressor(b"BZh91AY"), Some(&["bzip2", "-dc"][..]));
        assert_eq!(tar_decompressor(b"ustar\0"), None);
    }

    #[test]
    fn directory_and_tarball_become_squashfs() {
        if !mksquashfs_available() {
            eprintln!("note: mksquashfs is not installed; skipping");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("root");
        std::fs::create_dir_all(src.join("www")).unwrap();
        std::fs::write(src.join("www/index.html"), "hi").unwrap();
        let out = tmp.path().join("a.squashfs");
        from_dir(&src, &out).unwrap();
        assert_eq!(existing(&out).unwrap(), out);

        let tar = tmp.path().join("root.tar.gz");
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("tar -C {} -czf {} .", src.display(), tar.display()))
            .status()
            .unwrap();
        assert!(ok.success());
        let out2 = tmp.path().join("b.squashfs");
        from_tarball(&tar, &out2).unwrap();
        existing(&out2).unwrap();

        assert!(existing(&tar).is_err());
        assert!(from_dir(&tar, &out2).is_err());
    }
}
