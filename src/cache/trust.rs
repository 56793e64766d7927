//! What the file cache trusts, and the operating-system calls behind it:
//! opening without following a link or blocking, who owns a file and who
//! may write it, and which temporary files a dead writer left behind.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::path::Path;
use std::time::Duration;

const LOG: &str = "tokenkeeper::cache";

/// The largest cache file read. An entry is a few kilobytes at most (an
/// access token, a refresh token, an ID token); anything bigger was not
/// written by us and is not read into memory.
pub(crate) const MAX_FILE_BYTES: u64 = 64 * 1024;

/// A temporary file whose writer is dead is left alone this long after its
/// last change, in case the writer is alive in another PID namespace (a
/// container sharing the folder) where its pid means something else.
const DEAD_WRITER_GRACE: Duration = Duration::from_secs(10);

/// A temporary file this old is removed whoever wrote it: a write takes
/// milliseconds.
const ABANDONED_AFTER: Duration = Duration::from_secs(600);

/// The name of a temporary file for `file_name`, unique to this process
/// and this write: `.<name>.<pid>.<16 hex digits>.tmp`.
pub(crate) fn temp_name(file_name: &str) -> String {
    format!(
        ".{file_name}.{}.{:016x}.tmp",
        std::process::id(),
        fastrand::u64(..)
    )
}

/// Opens `path` to read it: never through a symbolic link at its last
/// component (that open fails), and without blocking on a FIFO or device.
pub(crate) fn open_to_read(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use rustix::fs::OFlags;
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(flags(OFlags::NOFOLLOW | OFlags::NONBLOCK));
    }
    options.open(path)
}

/// Opens (or creates, 0600) the lock file, with the same care as
/// [`open_to_read`].
pub(crate) fn open_lock(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use rustix::fs::OFlags;
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(flags(OFlags::NOFOLLOW | OFlags::NONBLOCK));
    }
    options.open(path)
}

#[cfg(unix)]
fn flags(flags: rustix::fs::OFlags) -> i32 {
    // The open flags all fit in an int; the kernel takes them as one.
    i32::try_from(flags.bits()).unwrap_or(0)
}

/// Creates `path` for writing, readable and writable by the owner only.
pub(crate) fn private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    // `create_new` (O_EXCL) never follows a link: a link at `path` fails.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        // The umask may have taken bits away; set exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    options.open(path)
}

/// Why a file (its metadata from the open handle) is not to be trusted:
/// not a regular file, owned by another user, or writable by group or
/// others. `None` when it is ours.
pub(crate) fn distrust(meta: &Metadata) -> Option<String> {
    if !meta.file_type().is_file() {
        return Some("it is not a regular file".to_owned());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Some(format!(
                "it belongs to another user (uid {}, not {me})",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Some(format!(
                "group or others may write it (mode {:04o})",
                meta.mode() & 0o7777
            ));
        }
    }
    None
}

/// Whether group or others may read the file.
pub(crate) fn readable_by_others(meta: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.mode() & 0o044 != 0
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

/// Sets mode 0600 on an open file (the very file checked, not whatever is
/// at its path now).
pub(crate) fn make_private(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(())
    }
}

/// Whether `a` and `b` describe the same file.
pub(crate) fn same_file(a: &Metadata, b: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        true
    }
}

/// Whether `path` itself is a symbolic link.
pub(crate) fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// When renaming over `path` failed with `e`: an explanation if the file
/// there belongs to another user in a sticky folder (like `/tmp`), where
/// only its owner may replace it.
pub(crate) fn explain_refused_replace(path: &Path, e: &io::Error) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if !matches!(
            e.kind(),
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
        ) && e.raw_os_error() != Some(rustix::io::Errno::PERM.raw_os_error())
        {
            return None;
        }
        let target = fs::symlink_metadata(path).ok()?;
        let folder = fs::metadata(path.parent().filter(|p| !p.as_os_str().is_empty())?).ok()?;
        let me = rustix::process::geteuid().as_raw();
        (target.uid() != me && folder.mode() & 0o1000 != 0).then(|| {
            format!(
                "cannot replace {}: it belongs to another user (uid {}) and its folder is \
                 sticky, so only that user may replace it; remove it or choose another path",
                path.display(),
                target.uid()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (path, e);
        None
    }
}

/// Removes the temporary files (`.<file_name>.<pid>.<hex>.tmp`) that a
/// writer killed between creating and renaming them left in `dir`: those
/// whose writer is dead (after a short grace) and those abandoned for ten
/// minutes. A live writer's file in progress is never touched. Failures are
/// ignored: the files are only clutter (each holds a token, though, which
/// is why they go).
pub(crate) fn remove_leftovers(dir: &Path, file_name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{file_name}.");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(leftover_pid)
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|at| at.elapsed().ok())
            .unwrap_or_default();
        let abandoned = age >= ABANDONED_AFTER;
        let dead = age >= DEAD_WRITER_GRACE && !process_alive(pid);
        if meta.file_type().is_file()
            && (abandoned || dead)
            && fs::remove_file(entry.path()).is_ok()
        {
            log::debug!(
                target: LOG,
                "removed {}, left by a writer that died or gave up",
                entry.path().display()
            );
        }
    }
}

/// The pid in `<pid>.<16 hex digits>`, the middle of a temporary name.
fn leftover_pid(middle: &str) -> Option<u32> {
    let (pid, random) = middle.split_once('.')?;
    let well_formed = !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 16
        && random.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| pid.parse().ok()).flatten()
}

/// Whether a process with this pid exists (here: in our PID namespace).
/// When that cannot be told, it counts as alive.
fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return true;
        };
        !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        )
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names_are_recognised_strictly() {
        assert_eq!(leftover_pid("123.00000000deadbeef"), Some(123));
        for bad in [
            "lock.123.00000000deadbeef",
            "123.xyz",
            "123",
            ".00000000deadbeef",
            "1a.00000000deadbeef",
        ] {
            assert_eq!(leftover_pid(bad), None, "{bad}");
        }
    }

    #[test]
    fn we_are_alive() {
        assert!(process_alive(std::process::id()));
    }
}
