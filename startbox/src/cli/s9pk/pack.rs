//! `start-cli s9pk pack [DIR] -o OUT.s9pk`: a package directory into a signed archive.
//!
//! The directory holds `manifest.yaml`, `icon.{png,svg,jpg,webp}`, `LICENSE.md`,
//! `instructions.md`, optionally `assets/` (packed as `assets.squashfs`), and whatever the
//! manifest's image sources point to (a root filesystem directory, a rootfs tarball or a
//! ready squashfs, relative to the directory). If it holds an executable `prepare.sh`, pack
//! runs it first (working directory: the package directory; `$S9PK_ARCHES`: the
//! architectures being packed), so that generated image contents need no separate step.

use std::{
    collections::BTreeSet,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::Args;
use ed25519_dalek::SigningKey;

use sdk::{Arch, ImageSourceKind};

use super::{KeyArg, key, progress, squashfs};

/// The icon file names pack looks for, in order.
pub const ICONS: &[&str] = &["icon.png", "icon.svg", "icon.jpg", "icon.webp"];

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The package directory (holding manifest.yaml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Where to write the package.
    #[arg(short, long, value_name = "OUT.s9pk")]
    pub output: PathBuf,
    #[command(flatten)]
    pub key: KeyArg,
    /// Only these architectures (repeatable) [default: the manifest's `arch`].
    #[arg(long, value_name = "ARCH")]
    pub arch: Vec<Arch>,
    /// Do not run the package's prepare.sh.
    #[arg(long)]
    pub no_prepare: bool,
}

/// Reads and validates `DIR/manifest.yaml`; errors name the file and the field.
pub fn read_manifest(dir: &Path) -> Result<sdk::Manifest> {
    let path = dir.join("manifest.yaml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_manifest(&path.display().to_string(), &text)
}

/// Parses and validates a manifest's text; `source` names it in errors.
pub fn parse_manifest(source: &str, text: &str) -> Result<sdk::Manifest> {
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    let manifest: sdk::Manifest = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            anyhow::anyhow!("{source}: {}", e.inner())
        } else {
            anyhow::anyhow!("{source}: {path}: {}", e.inner())
        }
    })?;
    manifest
        .validate()
        .map_err(|e| validation_error(source, &e))?;
    Ok(manifest)
}

/// One line per problem: `FILE: field.path: message`.
pub fn validation_error(source: &str, errors: &crds::ValidationErrors) -> anyhow::Error {
    let lines: Vec<String> = errors.0.iter().map(|e| format!("{source}: {e}")).collect();
    anyhow::anyhow!("invalid manifest:\n{}", lines.join("\n"))
}

/// The icon in `dir`: exactly one of [`ICONS`].
pub fn find_icon(dir: &Path) -> Result<PathBuf> {
    let found: Vec<PathBuf> = ICONS
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.is_file())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{}: no icon (expected one of {})",
            dir.display(),
            ICONS.join(", ")
        ),
        _ => bail!(
            "{}: several icons ({}); keep one",
            dir.display(),
            found
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn required_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!("{}: missing (a package needs {name})", path.display());
    }
    Ok(path)
}

/// Runs `DIR/prepare.sh` when it exists and is executable.
pub fn prepare(dir: &Path, arches: &BTreeSet<Arch>) -> Result<()> {
    let script = dir.join("prepare.sh");
    let Ok(meta) = std::fs::metadata(&script) else {
        return Ok(());
    };
    if meta.permissions().mode() & 0o111 == 0 {
        bail!(
            "{} is not executable (chmod +x it, or pass --no-prepare)",
            script.display()
        );
    }
    let arches: Vec<&str> = arches.iter().map(|a| a.as_str()).collect();
    let status = Command::new(script.canonicalize()?)
        .current_dir(dir)
        .env("S9PK_ARCHES", arches.join(" "))
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

/// The architectures to pack: `--arch` (each must be in the manifest's `arch`), else the
/// manifest's `arch`.
pub fn select_arches(manifest: &sdk::Manifest, wanted: &[Arch]) -> Result<BTreeSet<Arch>> {
    let listed: BTreeSet<Arch> = manifest.arch.iter().copied().collect();
    if wanted.is_empty() {
        return Ok(listed);
    }
    for a in wanted {
        if !listed.contains(a) {
            bail!(
                "the manifest's arch does not list {a} (it lists: {})",
                listed
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(wanted.iter().copied().collect())
}

/// Builds one image's squashfs from its source into `out` (or returns the ready file).
fn build_image(dir: &Path, kind: ImageSourceKind, path: &str, out: &Path) -> Result<PathBuf> {
    let src = dir.join(path);
    match kind {
        ImageSourceKind::Directory => {
            squashfs::from_dir(&src, out)?;
            Ok(out.to_owned())
        }
        ImageSourceKind::Tarball => {
            squashfs::from_tarball(&src, out)?;
            Ok(out.to_owned())
        }
        ImageSourceKind::Squashfs => squashfs::existing(&src),
    }
}

/// The manifest as stored in the archive: narrowed to the packed architectures, without
/// pack-time image sources.
pub fn packed_manifest(manifest: &sdk::Manifest, arches: &BTreeSet<Arch>) -> sdk::Manifest {
    let mut packed = manifest.clone();
    packed.arch.retain(|a| arches.contains(a));
    if let Some(hw) = packed.hardware_requirements.arch.as_mut() {
        hw.retain(|a| arches.contains(a));
    }
    for image in packed.images.values_mut() {
        image.arch.retain(|a| arches.contains(a));
        image.source = None;
    }
    packed
}

/// Packs `args.dir` into `args.output`; returns the commitment.
pub fn pack(args: &PackArgs) -> Result<s9pk::Commitment> {
    let dir = &args.dir;
    if !dir.join("manifest.yaml").is_file() {
        bail!("{}: no manifest.yaml", dir.display());
    }
    let manifest = read_manifest(dir)?;
    let arches = select_arches(&manifest, &args.arch)?;
    let signing_key = key::load(&args.key)?;
    if !args.no_prepare {
        prepare(dir, &arches)?;
    }
    let icon = find_icon(dir)?;
    let license = required_file(dir, "LICENSE.md")?;
    let instructions = required_file(dir, "instructions.md")?;

    let packed = packed_manifest(&manifest, &arches);

    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut members = Members::default();
    members.add_bytes(
        "manifest.json",
        serde_json::to_vec_pretty(&packed).context("serializing the manifest")?,
    )?;
    let icon_name = icon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    members.add_file(&icon_name, icon.clone())?;
    members.add_file("LICENSE.md", license)?;
    members.add_file("instructions.md", instructions)?;

    let assets = dir.join("assets");
    if assets.is_dir() {
        let out = tmp.path().join("assets.squashfs");
        let bar = progress::step("building assets.squashfs".into());
        let built = squashfs::from_dir(&assets, &out);
        bar.finish_and_clear();
        built?;
        members.add_file("assets.squashfs", out)?;
    }

    for (id, image) in &manifest.images {
        let config = serde_json::to_vec_pretty(&image.config())
            .with_context(|| format!("serializing image {id}'s config"))?;
        let image_arches = manifest.image_arch(id).unwrap_or_default();
        for &arch in image_arches.iter().filter(|a| arches.contains(a)) {
            let Some((kind, path)) = image.source.as_ref().and_then(|s| s.for_arch(arch)) else {
                bail!("image {id}: no source for {arch} in the manifest");
            };
            let out = tmp.path().join(format!("{id}-{arch}.squashfs"));
            let bar = progress::step(format!("building image {id} for {arch}"));
            let built =
                build_image(dir, kind, &path, &out).with_context(|| format!("image {id} ({arch})"));
            bar.finish_and_clear();
            members.add_file(&format!("images/{arch}/{id}.squashfs"), built?)?;
            members.add_bytes(&format!("images/{arch}/{id}.json"), config.clone())?;
        }
    }

    members.write(&signing_key, &args.output)
}

/// The archive's members, with their total size for the progress bar.
#[derive(Debug, Default)]
struct Members {
    builder: s9pk::ArchiveBuilder,
    total: u64,
}

impl Members {
    fn add_bytes(&mut self, path: &str, bytes: Vec<u8>) -> Result<()> {
        self.total += bytes.len() as u64;
        self.builder
            .add_bytes(path, bytes)
            .with_context(|| format!("adding {path}"))
    }

    fn add_file(&mut self, path: &str, file: PathBuf) -> Result<()> {
        let len = std::fs::metadata(&file)
            .with_context(|| format!("cannot read {}", file.display()))?
            .len();
        self.total += len;
        self.builder
            .add_file(path, file)
            .with_context(|| format!("adding {path}"))
    }

    /// Signs and writes to a temporary file beside `output`, then renames it into place.
    fn write(self, key: &SigningKey, output: &Path) -> Result<s9pk::Commitment> {
        let parent = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut file = tempfile::Builder::new()
            .prefix(".s9pk-")
            .tempfile_in(parent)
            .with_context(|| format!("cannot create a file in {}", parent.display()))?;
        let bar = progress::bytes("writing", self.total);
        let commitment = self
            .builder
            .write_to(key, file.as_file_mut(), &|done| {
                // Tables and alignment add a little to the members' sizes.
                if bar.length().is_some_and(|len| done > len) {
                    bar.set_length(done);
                }
                bar.set_position(done);
            })
            .with_context(|| format!("cannot write {}", output.display()));
        bar.finish_and_clear();
        let commitment = commitment?;
        file.as_file().sync_all()?;
        // NamedTempFile is 0600; a package is not secret.
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644))?;
        file.persist(output)
            .with_context(|| format!("cannot write {}", output.display()))?;
        Ok(commitment)
    }
}

pub fn run(args: &PackArgs, out: &mut dyn Write) -> Result<u8> {
    let commitment = pack(args)?;
    writeln!(out, "{}: {commitment}", args.output.display())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_errors_name_the_file() {
        let e = parse_manifest("pkg/manifest.yaml", "id: [").unwrap_err();
        assert!(format!("{e:#}").contains("pkg/manifest.yaml"), "{e:#}");
        let e = parse_manifest("pkg/manifest.yaml", "id: 5\n").unwrap_err();
        assert!(format!("{e:#}").contains("pkg/manifest.yaml"), "{e:#}");
        let hello = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../manifests/packages/hello-world/manifest.yaml"
        ))
        .unwrap();
        parse_manifest("hello-world/manifest.yaml", &hello).unwrap();
        let bad = hello.replace("image: main\n", "image: mian\n");
        let e = format!("{:#}", parse_manifest("m.yaml", &bad).unwrap_err());
        assert!(
            e.contains("m.yaml: daemons.main.image: unknown image \"mian\""),
            "{e}"
        );
    }

    #[test]
    fn icon_is_required_and_unique() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(find_icon(tmp.path()).is_err());
        std::fs::write(tmp.path().join("icon.svg"), "<svg/>").unwrap();
        assert_eq!(find_icon(tmp.path()).unwrap(), tmp.path().join("icon.svg"));
        std::fs::write(tmp.path().join("icon.png"), "x").unwrap();
        assert!(find_icon(tmp.path()).is_err());
    }
}
