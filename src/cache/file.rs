use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::entry::{self, Found, OtherKeyNotice};
use crate::cache::{CacheError, CacheKey, Lease, TokenCache};
use crate::clock::BoxFuture;
use crate::token::Token;

const LOG: &str = "tokenkeeper::cache";

/// A cache in a JSON file, shared by every process that names the same path.
///
/// Writes never tear the file: the token goes to a temporary file in the
/// same folder, which is flushed, synced and renamed over the old one, so a
/// reader sees the old token or the new one, never a mix. Every write sets
/// mode 0600 (on Unix), whatever the file had before. The folder is created
/// when missing. A corrupt, truncated or unreadable file is reported once
/// and read as a miss; the next write replaces it. The refresh token travels
/// with the access token.
///
/// The refresh lease is an exclusive lock on a file next to the cache
/// (`<path>.lock`); the operating system drops it when its holder exits,
/// however it exits.
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::cache::{CacheKey, FileCache, TokenCache};
/// use tokenkeeper::{AccessToken, LifetimePolicy, Token};
///
/// let dir = std::env::temp_dir().join(format!("tokenkeeper-doc-{}", std::process::id()));
/// let cache = FileCache::new(dir.join("token.json"));
/// let key = CacheKey::builder().field("client_id", "svc").build();
/// futures_lite::future::block_on(async {
///     let token = Token::new(AccessToken::new("t"), 0, Duration::from_secs(60), &LifetimePolicy::default());
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
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                self.report(&format!(
                    "cannot read the token cache {}: {e}",
                    self.path.display()
                ));
                return Ok(None);
            }
        };
        match entry::open(&bytes, key, entry::system_now_ms()) {
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

    fn report(&self, message: &str) {
        if !self.reported.swap(true, Ordering::Relaxed) {
            log::warn!(target: LOG, "{message}");
        }
    }

    fn write(&self, key: CacheKey, token: &Token) -> Result<(), CacheError> {
        let fail = |what: &str, e: io::Error| {
            CacheError::new(format!("cannot {what} {}: {e}", self.path.display())).with_cause(e)
        };
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir).map_err(|e| fail("create the folder of", e))?;
        let json = entry::encode(key, token)?;
        let file_name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let temp = dir.join(format!(
            ".{file_name}.{}.{:016x}.tmp",
            std::process::id(),
            fastrand::u64(..)
        ));
        let written = (|| {
            let mut file = private_file(&temp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temp, &self.path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(fail("write", e));
        }
        // Make the rename itself durable; failure here loses nothing.
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
        self.reported.store(false, Ordering::Relaxed);
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
        let file = open_lock_file(&self.lock_path).map_err(fail)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(fail(e)),
        }
    }
}

/// Creates `path` for writing, readable and writable by the owner only.
fn private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
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

fn open_lock_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
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
