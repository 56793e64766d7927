use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cache::entry::{self, Found, OtherKeyNotice};
use crate::cache::{CacheError, CacheKey, Lease, TokenCache};
use crate::time::{duration_ms, system_now_ms};
use crate::token::Token;
use crate::BoxFuture;
use ::redis::aio::{MultiplexedConnection, PubSubStream};
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    RedisError, Value,
};
use event_listener::Event;
use futures_lite::StreamExt;

const LOG: &str = "tokenkeeper::cache";

const DEFAULT_KEY_PREFIX: &str = "tokenkeeper:";
const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// After the server was found unreachable, operations fail fast (as a miss)
/// for this long before the next connection attempt.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Entries never live longer than this (ten years), whatever the token says:
/// Redis refuses expiry times that overflow its clock.
const MAX_TTL_MS: u64 = 10 * 365 * 86_400_000;

/// Deletes the lease only if it still holds our value: a holder whose lease
/// ran out (and was taken by another) must not free the new holder's lease.
const RELEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) \
     else return 0 end";

/// A cache in Redis, shared by every process that names the same server,
/// database and key prefix. Behind the `redis` feature.
///
/// The token is stored under `{<prefix>}token` as the same versioned JSON the
/// [`FileCache`](crate::cache::FileCache) writes
/// (`{"version":2,"key":"<cache key>","token":{...}}`), refresh token
/// included, and the entry's
/// TTL ends when the token expires (`SET ... PX`, the time left by this
/// machine's clock, so a Redis server whose clock is off does not matter).
/// A token that has already expired is not written. A corrupt entry, or one
/// of another format version or Redis type, is reported once and read as a
/// miss; the next write replaces it. So is an entry written with another
/// [`CacheKey`] (another client, grant or scope sharing the prefix; logged
/// once at debug level), or one issued more than 5 minutes in the future or
/// living more than a year, as in the file cache. Clients that share a
/// server still do best with a prefix each: one entry per prefix means they
/// would keep replacing each other's.
///
/// The refresh lease is `SET {<prefix>}lease <random value> NX PX <ttl>`; it
/// is given back by a script that deletes the key only if it still holds
/// that value, so a holder that outlived its lease never frees someone
/// else's. A holder that dies loses the lease when its TTL runs out.
///
/// The braces are a hash tag: Redis Cluster places both keys in the hash
/// slot of the prefix (a prefix that holds a non-empty `{...}` of its own
/// is used as it is). See [Cluster and Sentinel](#cluster-and-sentinel).
///
/// # Waiting for the lease holder's token
///
/// Every write is also published (`PUBLISH {<prefix>}written <entry>`, the
/// same JSON as the key holds). The first time a [`Chain`](crate::cache::Chain)
/// waits for the lease, the cache subscribes to that channel, on a second
/// connection that it keeps (reconnecting every second while it is down)
/// for as long as the cache or a clone of it lives; from then on a waiting
/// chain takes the token from the message the moment the holder writes it
/// ([`next_write`](TokenCache::next_write)) and reads the key only as a
/// slow fallback. A fleet's waiters then make no reads while they wait,
/// however many they are. Anyone allowed to subscribe to the channel sees
/// the token, as anyone allowed to read the key does: give the clients of
/// a shared server ACLs for their own keys and channels (`~{prefix}*`,
/// `&{prefix}*`).
///
/// # When Redis is down
///
/// Every Redis operation, connecting included, is bounded by the operation
/// timeout ([`op_timeout`](Self::op_timeout), 2 s by default), raced against
/// an `async-io` timer. A server that cannot be reached, or does not answer
/// in time, is logged once (a warning on the `tokenkeeper::cache` target)
/// and from then on the cache reads as empty, drops writes and hands out
/// leases that coordinate nothing, so the [`Chain`](crate::cache::Chain)
/// goes on to its source; while it stays down, operations fail fast for a
/// second after each failed attempt, then the next one reconnects. When the
/// server answers again that is logged once too and the cache works as
/// before. A [`TokenHandle`](crate::TokenHandle)'s reads of the current
/// token never touch the cache, so they never wait for Redis.
///
/// Errors that Redis reports while reachable (say, a missing password)
/// are returned as [`CacheError`]s, which the chain logs.
///
/// # Runtime
///
/// Built on the `redis` crate (1.x) with its smol support: the connection's
/// I/O task runs on smol's global executor, which brings its own thread, so
/// the cache works under async-std, smol or any other executor. The `redis`
/// crate compiles tokio's `sync` module (and tokio's I/O traits), but no
/// tokio runtime is started or needed. TLS (`rediss://`) is not supported.
///
/// # Cluster and Sentinel
///
/// [`new`](Self::new) talks to the one server its URL names. For Redis
/// Cluster use [`cluster`](Self::cluster) (feature `redis-cluster`): the
/// `redis` crate's cluster client follows the slots, `MOVED` redirections
/// and failovers, and the hash tag keeps the token and its lease on one
/// node. Behind Redis Sentinel use [`sentinel`](Self::sentinel) (feature
/// `redis-sentinel`): every new connection asks the sentinels for the
/// current primary, so the cache follows a failover once the sentinels
/// have promoted a replica. Both run on smol's global executor like the
/// rest, with no tokio runtime. While no primary answers (the seconds of a
/// failover), the cache is down as above: that costs cooperation, never a
/// valid token, as each manager keeps its own and asks the authority
/// itself. A token written to a primary that dies before its replica has
/// it is lost from the cache, not from the managers that hold it.
///
/// # Secrets
///
/// The URL's password never appears in `Debug`, in
/// [`describe`](TokenCache::describe) or in logs: they show the server as
/// `host:port/db` only.
///
/// ```no_run
/// use std::time::Duration;
/// use tokenkeeper::cache::{Chain, RedisCache};
/// use tokenkeeper::{AccessToken, FixedSource, TokenManager};
///
/// let cache = RedisCache::new("redis://:secret@127.0.0.1:6379/0")?
///     .key_prefix("my-service:")
///     .op_timeout(Duration::from_millis(500));
/// assert_eq!(cache.token_key(), "{my-service:}token");
/// let chain = Chain::new(FixedSource::new(AccessToken::new("t"), Duration::from_secs(60)))
///     .cache(cache);
/// let (handle, driver) = TokenManager::builder(chain).build();
/// # drop((handle, driver));
/// # Ok::<(), tokenkeeper::cache::CacheError>(())
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisCache {
    link: Arc<Link>,
    keys: Arc<Keys>,
    notices: Arc<Notices>,
    op_timeout: Duration,
}

/// The connection to one server, shared by clones.
struct Link {
    target: Target,
    /// The server without credentials, for messages.
    server: String,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    connection: Option<Connection>,
    /// No connection attempt before this instant.
    retry_at: Option<Instant>,
    /// Whether the server is unreachable (and that was logged).
    down: bool,
}

struct Keys {
    prefix: String,
    token: String,
    lease: String,
    /// Where each write is published.
    channel: String,
    /// Whether the current problem with the entry was already logged.
    reported: AtomicBool,
    other_key: OtherKeyNotice,
}

impl Keys {
    fn new(prefix: String) -> Keys {
        let base = tagged(&prefix);
        Keys {
            token: format!("{base}token"),
            lease: format!("{base}lease"),
            channel: format!("{base}written"),
            prefix,
            reported: AtomicBool::new(false),
            other_key: OtherKeyNotice::default(),
        }
    }
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("server", &self.link.server)
            .field("key_prefix", &self.keys.prefix)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

/// Where the server is found.
enum Target {
    /// One server, by its URL.
    Server(Client),
    /// The primary that Redis Sentinel names for `master`, asked again for
    /// every new connection, reached with `primary`'s credentials and
    /// database.
    #[cfg(feature = "redis-sentinel")]
    Sentinel {
        sentinels: Vec<ConnectionInfo>,
        master: String,
        primary: ::redis::RedisConnectionInfo,
    },
    /// A Redis Cluster through the `redis` crate's cluster client, which
    /// follows its slots; `nodes` (the seed nodes) for the subscription,
    /// as a cluster passes every published message to every node.
    #[cfg(feature = "redis-cluster")]
    Cluster {
        client: Box<::redis::cluster::ClusterClient>,
        nodes: Vec<Client>,
    },
}

/// A connection of a [`Target`].
#[derive(Clone)]
enum Connection {
    Server(MultiplexedConnection),
    #[cfg(feature = "redis-cluster")]
    Cluster(::redis::cluster_async::ClusterConnection),
}

impl Connection {
    async fn query(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        match self {
            Connection::Server(connection) => cmd.query_async(connection).await,
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(connection) => cmd.query_async(connection).await,
        }
    }
}

impl Target {
    async fn connect(&self) -> Result<Connection, RedisError> {
        // The caller's timeout bounds connecting; the crate's own would
        // only cut it shorter.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        match self {
            Target::Server(client) => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Connection::Server),
            #[cfg(feature = "redis-sentinel")]
            Target::Sentinel { .. } => self
                .primary()
                .await?
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Connection::Server),
            #[cfg(feature = "redis-cluster")]
            Target::Cluster { client, .. } => {
                client.get_async_connection().await.map(Connection::Cluster)
            }
        }
    }

    /// The client to subscribe through, on the `attempt`-th try (a
    /// cluster's seed nodes take turns).
    async fn subscriber(&self, attempt: usize) -> Result<Client, RedisError> {
        let _ = attempt;
        match self {
            Target::Server(client) => Ok(client.clone()),
            #[cfg(feature = "redis-sentinel")]
            Target::Sentinel { .. } => self.primary().await,
            #[cfg(feature = "redis-cluster")]
            Target::Cluster { nodes, .. } => Ok(nodes[attempt % nodes.len()].clone()),
        }
    }

    /// The current primary, as the sentinels name it.
    #[cfg(feature = "redis-sentinel")]
    async fn primary(&self) -> Result<Client, RedisError> {
        let Target::Sentinel {
            sentinels,
            master,
            primary,
        } = self
        else {
            unreachable!("only a sentinel target has a primary to find")
        };
        let node = ::redis::sentinel::SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(primary.clone());
        let mut sentinel = ::redis::sentinel::SentinelClient::build(
            sentinels.clone(),
            master.clone(),
            Some(node),
            ::redis::sentinel::SentinelServerType::Master,
        )?;
        sentinel.async_get_client().await
    }
}

/// `host:port/db` (or the socket's path) for messages: never credentials.
fn describe_address(info: &ConnectionInfo) -> Result<String, CacheError> {
    let db = info.redis_settings().db();
    Ok(match info.addr() {
        ConnectionAddr::Tcp(host, port) if host.contains(':') => format!("[{host}]:{port}/{db}"),
        ConnectionAddr::Tcp(host, port) => format!("{host}:{port}/{db}"),
        ConnectionAddr::Unix(path) => format!("unix:{}?db={db}", path.display()),
        _ => return Err(CacheError::new("unsupported Redis address (TLS?)")),
    })
}

/// The connection details in `url`.
fn parse_url(url: &str) -> Result<ConnectionInfo, CacheError> {
    url.into_connection_info().map_err(|e| {
        // The redis crate's messages never quote the URL.
        CacheError::new(format!("invalid Redis URL: {e}")).with_cause(e)
    })
}

/// The hash-tagged start of the key names: `prefix` itself when it holds a
/// hash tag already (a non-empty `{...}`, the part Redis Cluster hashes),
/// else `{prefix}`, so that the token, its lease and its channel always
/// share one hash slot.
fn tagged(prefix: &str) -> String {
    let has_tag = prefix
        .find('{')
        .and_then(|open| prefix[open + 1..].find('}'))
        .is_some_and(|length| length > 0);
    if has_tag {
        prefix.to_owned()
    } else if prefix.starts_with('}') {
        // `{}` would be an empty tag, which Redis ignores.
        format!("{{tokenkeeper}}{prefix}")
    } else {
        format!("{{{prefix}}}")
    }
}

/// Notices of writes: a subscription to the keys' channel, shared by a
/// cache and its clones, started by the first
/// [`next_write`](TokenCache::next_write) and ended (its task cancelled,
/// its connection closed) with the last clone.
#[derive(Default)]
struct Notices {
    board: Arc<Board>,
    listener: Mutex<Option<smol::Task<()>>>,
}

/// What the subscription has seen, for the waiters.
#[derive(Default)]
struct Board {
    state: Mutex<BoardState>,
    /// Notified on every message.
    event: Event,
}

#[derive(Default)]
struct BoardState {
    /// Whether the subscription is in place (else waiters get no notice).
    subscribed: bool,
    /// How many messages have come.
    written: u64,
    /// The last message: the entry written.
    latest: Option<Arc<[u8]>>,
}

impl Board {
    fn state(&self) -> std::sync::MutexGuard<'_, BoardState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn subscribed(&self, subscribed: bool) {
        self.state().subscribed = subscribed;
    }

    fn written(&self, entry: &[u8]) {
        {
            let mut state = self.state();
            state.written += 1;
            state.latest = Some(entry.into());
        }
        self.event.notify(usize::MAX);
    }
}

impl Notices {
    /// Starts the subscription unless it runs already.
    fn start(&self, link: &Arc<Link>, channel: &str, timeout: Duration) {
        let mut listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if listener.is_none() {
            let task = listen(
                Arc::clone(link),
                channel.to_owned(),
                Arc::clone(&self.board),
                timeout,
            );
            *listener = Some(smol::spawn(task));
        }
    }
}

/// Keeps a subscription to `channel` and posts its messages on `board`:
/// while it is down, tries again every [`RECONNECT_DELAY`].
async fn listen(link: Arc<Link>, channel: String, board: Arc<Board>, timeout: Duration) {
    let server = &link.server;
    for attempt in 0.. {
        let subscribed = with_timeout(timeout, async {
            let client = link.target.subscriber(attempt).await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<PubSubStream, RedisError>(pubsub.into_on_message())
        })
        .await;
        match subscribed {
            Some(Ok(mut messages)) => {
                log::debug!(target: LOG, "subscribed to {channel} on Redis ({server})");
                board.subscribed(true);
                while let Some(message) = messages.next().await {
                    board.written(message.get_payload_bytes());
                }
                board.subscribed(false);
                log::debug!(target: LOG, "the subscription to {channel} on Redis ({server}) ended");
            }
            Some(Err(e)) => {
                log::debug!(target: LOG, "cannot subscribe to {channel} on Redis ({server}): {e}")
            }
            None => {
                log::debug!(target: LOG, "cannot subscribe to {channel} on Redis ({server}): no answer within {timeout:?}")
            }
        }
        async_io::Timer::after(RECONNECT_DELAY).await;
    }
}

/// Why an operation failed. The first two mean the server is down for
/// now: the cache reads as empty and skips writes and leases (logged once,
/// when it goes down).
enum Failure {
    /// Connecting is paused after a recent failure.
    Paused,
    /// The connection failed, broke or did not answer in time.
    Lost(String),
    /// The server answered with an error.
    Server(RedisError),
}

impl RedisCache {
    /// A cache on the Redis server at `url`, such as
    /// `redis://127.0.0.1:6379/0`, `redis://:password@host:6379/2` or
    /// `redis+unix:///run/redis.sock?db=0`. Nothing connects until the first
    /// operation; an unparsable URL (or a TLS one, `rediss://`) is an error.
    pub fn new(url: &str) -> Result<RedisCache, CacheError> {
        let info = parse_url(url)?;
        let server = describe_address(&info)?;
        let client = Client::open(info)
            .map_err(|e| CacheError::new(format!("invalid Redis URL: {e}")).with_cause(e))?;
        Ok(RedisCache::on(Target::Server(client), server))
    }

    /// A cache on the Redis Cluster that the nodes at `urls` belong to (one
    /// is enough; more are tried in turn), through the `redis` crate's
    /// cluster client, which follows the cluster's slots, redirections and
    /// failovers. Every URL must name database 0, the only one a cluster
    /// has. The token and its lease share one hash slot (see
    /// [`key_prefix`](Self::key_prefix)). Behind the `redis-cluster` feature.
    ///
    /// ```no_run
    /// use tokenkeeper::cache::RedisCache;
    ///
    /// let cache = RedisCache::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])?;
    /// assert_eq!(cache.token_key(), "{tokenkeeper:}token");
    /// # Ok::<(), tokenkeeper::cache::CacheError>(())
    /// ```
    #[cfg(feature = "redis-cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
    pub fn cluster<S: AsRef<str>>(
        urls: impl IntoIterator<Item = S>,
    ) -> Result<RedisCache, CacheError> {
        let infos = urls
            .into_iter()
            .map(|url| parse_url(url.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if infos.is_empty() {
            return Err(CacheError::new(
                "a Redis Cluster needs at least one node URL",
            ));
        }
        let names = infos
            .iter()
            .map(describe_address)
            .collect::<Result<Vec<_>, _>>()?;
        let nodes = infos
            .iter()
            .map(|info| Client::open(info.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CacheError::new(format!("invalid Redis URL: {e}")).with_cause(e))?;
        let client = ::redis::cluster::ClusterClient::new(infos)
            .map_err(|e| CacheError::new(format!("invalid Redis Cluster: {e}")).with_cause(e))?;
        let server = format!("cluster {}", names.join(","));
        let client = Box::new(client);
        Ok(RedisCache::on(Target::Cluster { client, nodes }, server))
    }

    /// A cache on the primary that the Redis Sentinels at `sentinels` name
    /// for `master`: the sentinels are asked again on every new connection,
    /// so after a failover (the primary down, a replica promoted) the cache
    /// finds the new primary, a second or so after the sentinels do. The
    /// primary is reached with the first sentinel URL's username, password
    /// and database. Behind the `redis-sentinel` feature.
    ///
    /// While no primary answers, the cache is down as any unreachable
    /// server is: it reads as empty and each manager asks the authority
    /// itself, so a failover costs cooperation, never a valid token.
    ///
    /// ```no_run
    /// use tokenkeeper::cache::RedisCache;
    ///
    /// let cache = RedisCache::sentinel(["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"], "tokens")?;
    /// # Ok::<(), tokenkeeper::cache::CacheError>(())
    /// ```
    #[cfg(feature = "redis-sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-sentinel")))]
    pub fn sentinel<S: AsRef<str>>(
        sentinels: impl IntoIterator<Item = S>,
        master: &str,
    ) -> Result<RedisCache, CacheError> {
        let sentinels = sentinels
            .into_iter()
            .map(|url| parse_url(url.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = sentinels.first() else {
            return Err(CacheError::new(
                "Redis Sentinel needs at least one sentinel URL",
            ));
        };
        let primary = first.redis_settings().clone();
        let names = sentinels
            .iter()
            .map(describe_address)
            .collect::<Result<Vec<_>, _>>()?;
        let server = format!("sentinel {} master {master}", names.join(","));
        let target = Target::Sentinel {
            sentinels,
            master: master.to_owned(),
            primary,
        };
        Ok(RedisCache::on(target, server))
    }

    fn on(target: Target, server: String) -> RedisCache {
        RedisCache {
            link: Arc::new(Link {
                target,
                server,
                state: Mutex::new(LinkState::default()),
            }),
            keys: Arc::new(Keys::new(DEFAULT_KEY_PREFIX.to_owned())),
            notices: Arc::default(),
            op_timeout: DEFAULT_OP_TIMEOUT,
        }
    }

    /// Sets the prefix of the keys (`{<prefix>}token`, `{<prefix>}lease`,
    /// and the channel `{<prefix>}written`); `tokenkeeper:` by default.
    /// Give each client, audience or scope set its own prefix. A prefix
    /// with a hash tag of its own (`app:{billing}:`) is used without
    /// braces around it (`app:{billing}:token`).
    ///
    /// ```
    /// use tokenkeeper::cache::RedisCache;
    ///
    /// let cache = RedisCache::new("redis://127.0.0.1/")?.key_prefix("billing:");
    /// assert_eq!(cache.token_key(), "{billing:}token");
    /// assert_eq!(cache.lease_key(), "{billing:}lease");
    /// let tagged = RedisCache::new("redis://127.0.0.1/")?.key_prefix("app:{billing}:");
    /// assert_eq!(tagged.token_key(), "app:{billing}:token");
    /// # Ok::<(), tokenkeeper::cache::CacheError>(())
    /// ```
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.keys = Arc::new(Keys::new(prefix.into()));
        self.notices = Arc::default();
        self
    }

    /// Sets how long one Redis operation (connecting included) may take
    /// before the server counts as down; 2 s by default.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// The key the token is stored under.
    pub fn token_key(&self) -> &str {
        &self.keys.token
    }

    /// The key of the refresh lease.
    pub fn lease_key(&self) -> &str {
        &self.keys.lease
    }

    fn report(&self, message: &str) {
        if !self.keys.reported.swap(true, Ordering::Relaxed) {
            log::warn!(target: LOG, "{message}");
        }
    }

    async fn read_token(&self, cache_key: CacheKey) -> Result<Option<Token>, CacheError> {
        let key = &self.keys.token;
        let value = match self.link.call(&get(key), self.op_timeout).await {
            Ok(value) => value,
            Err(Failure::Paused | Failure::Lost(_)) => return Ok(None),
            Err(Failure::Server(e)) if e.code() == Some("WRONGTYPE") => {
                self.report(&format!(
                    "Redis key {key} ({}) is not a string; ignoring it until the next write",
                    self.link.server
                ));
                return Ok(None);
            }
            Err(Failure::Server(e)) => return Err(self.link.error("read", e)),
        };
        let bytes = match ::redis::from_redis_value::<Option<Vec<u8>>>(value) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(_) => {
                // The error would quote the value, which may be a token.
                self.report(&format!(
                    "Redis key {key} ({}) holds a value that is not a string; ignoring it",
                    self.link.server
                ));
                return Ok(None);
            }
        };
        match entry::open(&bytes, cache_key, system_now_ms()) {
            Ok(Found::Token(token)) => {
                self.keys.reported.store(false, Ordering::Relaxed);
                self.keys.other_key.clear();
                Ok(Some(token))
            }
            Ok(Found::OtherKey) => {
                self.keys.reported.store(false, Ordering::Relaxed);
                self.keys.other_key.found(|| self.describe());
                Ok(None)
            }
            Err(e) => {
                self.report(&format!(
                    "Redis key {key} ({}): {e}; ignoring it until the next write",
                    self.link.server
                ));
                Ok(None)
            }
        }
    }

    async fn write_token(&self, cache_key: CacheKey, token: &Token) -> Result<(), CacheError> {
        let ttl_ms = token
            .expiry_ms()
            .saturating_sub(system_now_ms())
            .min(MAX_TTL_MS);
        if ttl_ms == 0 {
            log::debug!(target: LOG, "not writing an expired token to Redis ({})", self.link.server);
            return Ok(());
        }
        let json = entry::encode(cache_key, token)?;
        let mut set = ::redis::cmd("SET");
        set.arg(&self.keys.token).arg(&json).arg("PX").arg(ttl_ms);
        match self.link.call(&set, self.op_timeout).await {
            Ok(_) => {
                self.keys.reported.store(false, Ordering::Relaxed);
                self.publish(&json).await;
                Ok(())
            }
            // Already logged; the token stays in memory and in other caches.
            Err(Failure::Paused | Failure::Lost(_)) => Ok(()),
            Err(Failure::Server(e)) => Err(self.link.error("write", e)),
        }
    }

    /// Tells the processes waiting for the lease holder's token what was
    /// written (see [`next_write`](TokenCache::next_write)). Best effort:
    /// without the message they read the cache a little later.
    async fn publish(&self, entry: &[u8]) {
        let mut publish = ::redis::cmd("PUBLISH");
        publish.arg(&self.keys.channel).arg(entry);
        if let Err(Failure::Server(e)) = self.link.call(&publish, self.op_timeout).await {
            log::debug!(target: LOG, "cannot publish the new token on Redis ({}): {e}", self.link.server);
        }
    }

    fn notice(&self, key: CacheKey) -> Option<BoxFuture<'static, Option<Token>>> {
        self.notices
            .start(&self.link, &self.keys.channel, self.op_timeout);
        let board = Arc::clone(&self.notices.board);
        // Listening before looking: a message posted in between wakes it.
        let mut listener = board.event.listen();
        let seen = {
            let state = board.state();
            if !state.subscribed {
                return None;
            }
            state.written
        };
        Some(Box::pin(async move {
            loop {
                let latest = {
                    let state = board.state();
                    (state.written > seen).then(|| state.latest.clone())
                };
                if let Some(latest) = latest {
                    // The read path reports bad entries; a notice is a hint.
                    return match entry::open(&latest?, key, system_now_ms()) {
                        Ok(Found::Token(token)) => Some(token),
                        _ => None,
                    };
                }
                listener.await;
                listener = board.event.listen();
            }
        }))
    }

    async fn take_lease(&self, ttl: Duration) -> Result<Option<Lease>, CacheError> {
        let value = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let ttl_ms = duration_ms(ttl).clamp(1, MAX_TTL_MS);
        let mut set = ::redis::cmd("SET");
        set.arg(&self.keys.lease)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms);
        match self.link.call(&set, self.op_timeout).await {
            Ok(Value::Nil) => Ok(None),
            Ok(_) => {
                let link = Arc::clone(&self.link);
                let key = self.keys.lease.clone();
                let timeout = self.op_timeout;
                Ok(Some(Lease::new(move || {
                    Box::pin(async move { link.release(&key, &value, timeout).await })
                })))
            }
            // Nobody can coordinate through a server that is down: go on
            // as a cache without leases would.
            Err(Failure::Paused | Failure::Lost(_)) => Ok(Some(Lease::none())),
            Err(Failure::Server(e)) => Err(self.link.error("take the refresh lease in", e)),
        }
    }
}

impl Link {
    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, what: &str, e: RedisError) -> CacheError {
        CacheError::new(format!("cannot {what} Redis ({}): {e}", self.server)).with_cause(e)
    }

    /// Runs `cmd` within `timeout`, connecting first if needed. A connection
    /// that broke since its last use is replaced once, within the same
    /// timeout.
    async fn call(&self, cmd: &Cmd, timeout: Duration) -> Result<Value, Failure> {
        let attempt = async {
            let mut retried = false;
            loop {
                let (mut connection, fresh) = self.connection().await?;
                match connection.query(cmd).await {
                    Ok(value) => return Ok(value),
                    Err(e) if is_disconnect(&e) => {
                        self.forget();
                        if fresh || retried {
                            return Err(Failure::Lost(e.to_string()));
                        }
                        retried = true;
                    }
                    Err(e) => return Err(Failure::Server(e)),
                }
            }
        };
        let outcome = with_timeout(timeout, attempt)
            .await
            .unwrap_or_else(|| Err(Failure::Lost(format!("no answer within {timeout:?}"))));
        match &outcome {
            Ok(_) | Err(Failure::Server(_)) => self.up(),
            Err(Failure::Lost(reason)) => self.down(reason),
            Err(Failure::Paused) => {}
        }
        outcome
    }

    /// The current connection, or a new one (`true`).
    async fn connection(&self) -> Result<(Connection, bool), Failure> {
        {
            let state = self.state();
            if let Some(connection) = &state.connection {
                return Ok((connection.clone(), false));
            }
            if state.retry_at.is_some_and(|at| Instant::now() < at) {
                return Err(Failure::Paused);
            }
        }
        let connection = self
            .target
            .connect()
            .await
            .map_err(|e| Failure::Lost(e.to_string()))?;
        self.state().connection = Some(connection.clone());
        Ok((connection, true))
    }

    fn forget(&self) {
        self.state().connection = None;
    }

    fn up(&self) {
        let mut state = self.state();
        state.retry_at = None;
        if std::mem::take(&mut state.down) {
            drop(state);
            log::info!(target: LOG, "Redis ({}) is reachable again; the token cache is back", self.server);
        }
    }

    fn down(&self, reason: &str) {
        let mut state = self.state();
        state.connection = None;
        state.retry_at = Instant::now().checked_add(RECONNECT_DELAY);
        if !std::mem::replace(&mut state.down, true) {
            drop(state);
            // Error texts from the redis crate name no credentials.
            log::warn!(
                target: LOG,
                "Redis ({}) is unreachable ({reason}); the token cache reads as empty and \
                 refresh leases are skipped until it is back",
                self.server
            );
        }
    }

    async fn release(&self, key: &str, value: &str, timeout: Duration) {
        let mut eval = ::redis::cmd("EVAL");
        eval.arg(RELEASE_SCRIPT).arg(1).arg(key).arg(value);
        match self.call(&eval, timeout).await {
            Ok(Value::Int(1)) => {}
            Ok(_) => {
                log::debug!(target: LOG, "the refresh lease in Redis ({}) had run out before its release", self.server)
            }
            // It runs out by its TTL.
            Err(Failure::Paused | Failure::Lost(_)) => {}
            Err(Failure::Server(e)) => {
                log::warn!(target: LOG, "cannot release the refresh lease in Redis ({}): {e}", self.server)
            }
        }
    }
}

impl TokenCache for RedisCache {
    fn read(&self, key: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        Box::pin(self.read_token(key))
    }

    fn write<'a>(
        &'a self,
        key: CacheKey,
        token: &'a Token,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(self.write_token(key, token))
    }

    fn try_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<Option<Lease>, CacheError>> {
        Box::pin(self.take_lease(ttl))
    }

    fn has_lease(&self) -> bool {
        true
    }

    fn next_write(&self, key: CacheKey) -> Option<BoxFuture<'static, Option<Token>>> {
        self.notice(key)
    }

    fn describe(&self) -> String {
        format!("redis {} key {}", self.link.server, self.keys.token)
    }
}

fn get(key: &str) -> Cmd {
    let mut cmd = ::redis::cmd("GET");
    cmd.arg(key);
    cmd
}

/// Whether `e` means the connection is unusable (as opposed to an error
/// answer from a working server).
fn is_disconnect(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// `future`'s output, or `None` when `timeout` passes first.
async fn with_timeout<T>(timeout: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        async_io::Timer::after(timeout).await;
        None
    })
    .await
}
