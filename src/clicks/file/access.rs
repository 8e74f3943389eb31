//! Who may read the click log. Clicks are personal data (addresses, user agents, what was
//! clicked), so the directory is `0700` and every file `0600`; [`Access::GroupRead`] makes them
//! `0750` and `0640` for a shipping agent in the edge's group.
//!
//! The modes are set explicitly, not left to the umask (which only ever removes bits, and may be
//! anything under a service manager or a shell), and the directory's mode is set even when
//! someone else created it: at open an existing directory, and existing click files, are brought
//! to the configured mode with a warning that says what changed. What cannot be changed (owned by
//! another user) is warned about, not fatal: the edge keeps redirecting.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use super::naming;

/// The permission bits `chmod` sets; the others (setgid, sticky) are kept as they are, so a
/// directory made setgid for its group stays so.
const PERMISSION_BITS: u32 = 0o777;

/// Who may read the click log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Access {
    /// Only the edge's user: directory `0700`, files `0600`. The default.
    #[default]
    Private,
    /// The edge's group may read too: directory `0750`, files `0640` (`clicks.group_read`).
    GroupRead,
}

impl Access {
    /// Mode of the click log directory (and of parents it creates).
    pub fn dir_mode(self) -> u32 {
        match self {
            Access::Private => 0o700,
            Access::GroupRead => 0o750,
        }
    }

    /// Mode of every click file and quarantined tail.
    pub fn file_mode(self) -> u32 {
        match self {
            Access::Private => 0o600,
            Access::GroupRead => 0o640,
        }
    }
}

/// Creates `dir` and its missing parents with the directory mode, and gives `dir` exactly that
/// mode if it had another (warning if it already existed, since someone chose its mode).
pub(super) fn prepare_dir(dir: &Path, access: Access) -> io::Result<()> {
    let existed = dir.is_dir();
    DirBuilder::new()
        .recursive(true)
        .mode(access.dir_mode())
        .create(dir)?;
    if !existed {
        // The new directory's own entry made durable, before an acknowledged click can depend
        // on it (its parents, if they were made too, are the data dir's, made at each start).
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
    }
    let mode = std::fs::metadata(dir)?.permissions().mode();
    let wanted = (mode & !PERMISSION_BITS) | access.dir_mode();
    if mode == wanted {
        return Ok(());
    }
    match std::fs::set_permissions(dir, Permissions::from_mode(wanted)) {
        Ok(()) if existed => tracing::warn!(
            dir = %dir.display(),
            was = %format!("{:04o}", mode & PERMISSION_BITS),
            now = %format!("{:04o}", access.dir_mode()),
            "click log directory had other permissions than clicks.group_read allows; changed"
        ),
        Ok(()) => {}
        Err(e) => tracing::warn!(
            dir = %dir.display(),
            mode = %format!("{:04o}", mode & PERMISSION_BITS),
            wanted = %format!("{:04o}", access.dir_mode()),
            error = %e,
            "click log directory permissions could not be changed; clicks may be readable by \
             others: chown it to the edge's user"
        ),
    }
    Ok(())
}

/// Creates a new file at `path` for appending, with exactly the file mode whatever the umask.
/// Fails if it exists.
pub(super) fn create_new(path: &Path, access: Access) -> io::Result<File> {
    // Created with at most the file mode (the umask can only take bits away), then set to it
    // exactly: never readable by more than the setting allows, not even for a moment.
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(access.file_mode())
        .open(path)?;
    file.set_permissions(Permissions::from_mode(access.file_mode()))?;
    Ok(file)
}

/// Gives the click files already in `dir` (logs and quarantined tails, from an earlier version or
/// another setting) the file mode, with one warning saying how many changed or could not be.
pub(super) fn restrict_files(dir: &Path, access: Access) -> io::Result<()> {
    let (mut changed, mut failed) = (0u64, None);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_str().is_some_and(naming::is_log_file) {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() || meta.permissions().mode() & PERMISSION_BITS == access.file_mode() {
            continue;
        }
        match std::fs::set_permissions(entry.path(), Permissions::from_mode(access.file_mode())) {
            Ok(()) => changed += 1,
            Err(e) => failed = Some((entry.path(), e)),
        }
    }
    if changed > 0 {
        tracing::warn!(
            dir = %dir.display(),
            files = changed,
            now = %format!("{:04o}", access.file_mode()),
            "click files had other permissions than clicks.group_read allows; changed"
        );
    }
    if let Some((path, e)) = failed {
        tracing::warn!(
            path = %path.display(),
            error = %e,
            "click file permissions could not be changed; it may be readable by others"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & PERMISSION_BITS
    }

    #[test]
    fn an_open_directory_and_its_files_are_made_private() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("clicks");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
        let old = dir.join("clicks-20251124T160000.000Z.jsonl");
        let torn = dir.join("clicks-20251124T160000.000Z.jsonl.torn");
        let other = dir.join("notes.txt");
        for f in [&old, &torn, &other] {
            std::fs::write(f, b"{}\n").unwrap();
            std::fs::set_permissions(f, Permissions::from_mode(0o666)).unwrap();
        }
        prepare_dir(&dir, Access::Private).unwrap();
        restrict_files(&dir, Access::Private).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&old), 0o600);
        assert_eq!(mode(&torn), 0o600);
        // Not ours: left alone.
        assert_eq!(mode(&other), 0o666);
    }

    #[test]
    fn group_read_opens_the_group_and_keeps_a_setgid_directory_setgid() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("clicks");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o2700)).unwrap();
        prepare_dir(&dir, Access::GroupRead).unwrap();
        let full = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(full & 0o7777, 0o2750);
        let file = create_new(&dir.join("clicks-x.jsonl"), Access::GroupRead).unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o640);
    }

    #[test]
    fn missing_parents_are_created_private_too() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("a/b/clicks");
        prepare_dir(&dir, Access::Private).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // The process umask may take bits away from the parents, never add any.
        assert_eq!(mode(&parent.path().join("a")) & !0o700, 0);
        assert_eq!(mode(&parent.path().join("a/b")) & !0o700, 0);
        let file = create_new(&dir.join("f"), Access::Private).unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert!(create_new(&dir.join("f"), Access::Private).is_err());
    }
}
