use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::entry::{self, Found, OtherKeyNotice};
use crate::cache::trust::{self, MAX_FILE_BYTES};
use crate::cache::{CacheError, CacheKey, Lease, TokenCache};
use crate::time::system_now_ms;
use crate::token::Token;
use crate::BoxFuture;

const LOG: &str = "tokenkeeper::cache";

/// A cache in a JSON file, shared by every process that names the same path.
///
/// Writes never tear the file: the token goes to a temporary file in the
/// same folder, which is flushed, synced and renamed over the old one, so a
/// reader sees the old token or the new one, never a mix. Every write sets
/// mode 0600 (on Unix), whatever the file had before. The folder is created
/// when missing. A corrupt, truncated or unreadable file is reported once
/// and read as a miss; the next write replaces it. The refresh token travels
/// with the access token. The entry records the [`CacheKey`] it was written
/// with, and is read only with that key: clients that share the file never
/// get each other's token (they do replace each other's, so give each its
/// own file).
///
/// # What the file cache trusts
///
/// Others on the machine may be able to write next to the cache, so it
/// reads only a file that is its own:
///
/// - a regular file (a FIFO, a device or a folder at the path is a miss),
///   opened without blocking and without following a symbolic link at the
///   path (a link there is a miss; links in the folders above it are
///   followed, so the cache may live under a linked folder);
/// - owned by the effective user, and not writable by group or others;
/// - at most 64 KiB (no entry is that big), read with that bound even if
///   the file grows meanwhile;
/// - holding an entry issued at most 5 minutes in the future (clock skew
///   between machines) that expires at most a year after it was issued.
///
/// Any other file is a miss, with one warning that names the path (never
/// the contents), until the next write renames a private file of our own
/// over it. In a sticky folder (like `/tmp`) another user's file cannot be
/// replaced: the write fails with an error that says so. A valid entry in a
/// file that group or others may read (0644) is served, and the file is
/// made 0600 on the spot, with a warning: it is ours, so its contents are
/// sound, but the token must not stay readable to others.
///
/// A writer killed between creating its temporary file
/// (`.<name>.<pid>.<random>.tmp`) and renaming it leaves the file behind,
/// with a token in it: the next write removes such files when their
/// writer's pid is dead (and the file is older than 10 s, in case the
/// writer lives in another PID namespace) or when they are older than 10
/// minutes. A live writer's file in progress is never touched.
///
/// The refresh lease is an exclusive lock on a file next to the cache
/// (`<path>.lock`); the operating system drops it when its holder exits,
/// however it exits. The lock file is checked as the cache file is: one
/// that is not a regular file of ours that only we may write is replaced
/// (with one warning) by an empty private one before it is locked.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tokenkeeper::cache::{CacheKey, FileCache, TokenCache};
/// use tokenkeeper::{AccessToken, LifetimePolicy, Token};
///
/// let dir = std::env::temp_dir().join(format!("tokenkeeper-doc-{}", std::process::id()));
/// let cache = FileCache::new(dir.join("token.json"));
/// let key = CacheKey::builder().field("client_id", "svc").build();
/// futures_lite::future::block_on(async {
///     let token = Token::new(AccessToken::new("t"), SystemTime::now(), Duration::from_secs(60), &LifetimePolicy::default());
///     cache.write(key, &token).await.unwrap();
///     assert_eq!(cache.read(key).await.unwrap(), Some(token));
/// });
/// # std::fs::remove_dir_all(dir).unwrap();
/// ```
#[derive(Clone)]
pub struct FileCache {
    inner: Arc<FileInner>,
}

struct FileInner {
    path: PathBuf,
    lock_path: PathBuf,
    /// Whether the current problem with the file was already logged.
    reported: AtomicBool,
    /// Whether the current problem with the lock file was already logged.
    lock_reported: AtomicBool,
    other_key: OtherKeyNotice,
}

impl fmt::Debug for FileCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCache")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl FileCache {
    /// A cache in the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> FileCache {
        let path = path.into();
        let mut lock_name = path.file_name().unwrap_or_default().to_os_string();
        lock_name.push(".lock");
        let lock_path = path.with_file_name(lock_name);
        FileCache {
            inner: Arc::new(FileInner {
                path,
                lock_path,
                reported: AtomicBool::new(false),
                lock_reported: AtomicBool::new(false),
                other_key: OtherKeyNotice::default(),
            }),
        }
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

impl FileInner {
    fn read(&self, key: CacheKey) -> Result<Option<Token>, CacheError> {
        let Some(bytes) = self.read_trusted() else {
            return Ok(None);
        };
        // Shared caches are shared by wall clock, whatever clock a manager
        // runs on.
        match entry::open(&bytes, key, system_now_ms()) {
            Ok(Found::Token(token)) => {
                self.reported.store(false, Ordering::Relaxed);
                self.other_key.clear();
                Ok(Some(token))
            }
            Ok(Found::OtherKey) => {
                self.reported.store(false, Ordering::Relaxed);
                self.other_key
                    .found(|| format!("the token cache {}", self.path.display()));
                Ok(None)
            }
            Err(e) => {
                self.report(&format!(
                    "token cache {}: {e}; ignoring it until the next write",
                    self.path.display()
                ));
                Ok(None)
            }
        }
    }

    /// The contents of the cache file if it is one we trust: a regular
    /// file of ours that only we may write, not a link, at most
    /// [`MAX_FILE_BYTES`]. Anything else is reported once and read as
    /// nothing; its contents are never quoted.
    fn read_trusted(&self) -> Option<Vec<u8>> {
        let untrusted = |why: &str| {
            self.report(&format!(
                "not trusting the token cache {}: {why}; ignoring it until the next write \
                 replaces it",
                self.path.display()
            ));
            None
        };
        let file = match trust::open_to_read(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(_) if trust::is_symlink(&self.path) => {
                return untrusted("it is a symbolic link, which is not followed");
            }
            Err(e) => {
                self.report(&format!(
                    "cannot read the token cache {}: {e}",
                    self.path.display()
                ));
                return None;
            }
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => return untrusted(&format!("cannot inspect it: {e}")),
        };
        if let Some(why) = trust::distrust(&meta) {
            return untrusted(&why);
        }
        if meta.len() > MAX_FILE_BYTES {
            return untrusted("it is larger than any token entry (64 KiB)");
        }
        let mut bytes = Vec::new();
        // Bounded even if the file grows after the check.
        if let Err(e) = (&file).take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
            self.report(&format!(
                "cannot read the token cache {}: {e}",
                self.path.display()
            ));
            return None;
        }
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return untrusted("it is larger than any token entry (64 KiB)");
        }
        if trust::readable_by_others(&meta) {
            // Ours and written only by us, so the entry is sound; but the
            // token in it must not stay readable to others.
            match trust::make_private(&file) {
                Ok(()) => log::warn!(
                    target: LOG,
                    "the token cache {} was readable by group or others; its mode is 0600 now",
                    self.path.display()
                ),
                Err(e) => return untrusted(&format!("others may read it and chmod failed: {e}")),
            }
        }
        Some(bytes)
    }

    fn report(&self, message: &str) {
        if !self.reported.swap(true, Ordering::Relaxed) {
            log::warn!(target: LOG, "{message}");
        }
    }

    fn write(&self, key: CacheKey, token: &Token) -> Result<(), CacheError> {
        let json = entry::encode(key, token)?;
        self.replace(&self.path, &json)?;
        self.reported.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Puts a new private file with `contents` at `path` (the cache file or
    /// its lock file), whatever was there: the contents go to a temporary
    /// file in the same folder, synced, and renamed over `path` (which
    /// replaces a link, never what it points to). Temporary files left by
    /// writers that died are removed afterwards.
    fn replace(&self, path: &Path, contents: &[u8]) -> Result<(), CacheError> {
        let fail = |what: &str, e: io::Error| {
            CacheError::new(format!("cannot {what} {}: {e}", path.display())).with_cause(e)
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir).map_err(|e| fail("create the folder of", e))?;
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = dir.join(trust::temp_name(&file_name));
        let written = (|| {
            let mut file = trust::private_file(&temp)?;
            file.write_all(contents)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temp, path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            if let Some(why) = trust::explain_refused_replace(path, &e) {
                return Err(CacheError::new(why).with_cause(e));
            }
            return Err(fail("write", e));
        }
        // Make the rename itself durable; failure here loses nothing.
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
        trust::remove_leftovers(dir, &file_name);
        Ok(())
    }

    fn try_lock(&self) -> Result<Option<File>, CacheError> {
        let fail = |e: io::Error| {
            CacheError::new(format!("cannot lock {}: {e}", self.lock_path.display())).with_cause(e)
        };
        if let Some(dir) = self
            .lock_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            fs::create_dir_all(dir).map_err(fail)?;
        }
        // A lock file we do not trust is replaced by one of our own; a
        // lock on a file that was replaced meanwhile (by another process
        // doing the same) locks nothing, so that is checked and retried.
        for _ in 0..3 {
            let file = match trust::open_lock(&self.lock_path) {
                Ok(file) => file,
                Err(_) if trust::is_symlink(&self.lock_path) => {
                    self.replace_lock("it is a symbolic link, which is not followed")?;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    self.replace_lock(&format!("it cannot be opened ({e})"))?;
                    continue;
                }
                Err(e) => return Err(fail(e)),
            };
            let meta = file.metadata().map_err(fail)?;
            if let Some(why) = trust::distrust(&meta) {
                self.replace_lock(&why)?;
                continue;
            }
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(e)) => return Err(fail(e)),
            }
            match fs::symlink_metadata(&self.lock_path) {
                Ok(now) if trust::same_file(&meta, &now) => {
                    self.lock_reported.store(false, Ordering::Relaxed);
                    return Ok(Some(file));
                }
                _ => continue,
            }
        }
        Err(CacheError::new(format!(
            "cannot lock {}: it keeps being replaced",
            self.lock_path.display()
        )))
    }

    /// Replaces an untrusted lock file with an empty private one, after one
    /// warning that names it.
    fn replace_lock(&self, why: &str) -> Result<(), CacheError> {
        if !self.lock_reported.swap(true, Ordering::Relaxed) {
            log::warn!(
                target: LOG,
                "not trusting the lock file {}: {why}; replacing it with one of our own",
                self.lock_path.display()
            );
        }
        self.replace(&self.lock_path, b"")
    }
}

impl TokenCache for FileCache {
    fn read(&self, key: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(blocking::unblock(move || inner.read(key)))
    }

    fn write<'a>(
        &'a self,
        key: CacheKey,
        token: &'a Token,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        let inner = Arc::clone(&self.inner);
        let token = token.clone();
        Box::pin(blocking::unblock(move || inner.write(key, &token)))
    }

    fn try_lease(&self, _ttl: Duration) -> BoxFuture<'_, Result<Option<Lease>, CacheError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let locked = blocking::unblock(move || inner.try_lock()).await?;
            Ok(locked.map(|file| {
                Lease::new(move || {
                    // Closing the file releases the lock.
                    drop(file);
                    Box::pin(async {})
                })
            }))
        })
    }

    fn has_lease(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("file {}", self.inner.path.display())
    }
}
