//! Limit counters in Redis, so that every process using the same server
//! enforces one limit together (feature `redis`).
//!
//! Each [`LimitBackend`] operation is one round trip and atomic on the
//! server: a Lua script (sent by SHA, loaded on a `NOSCRIPT` miss) or a
//! single command. Scripts run one at a time on the server, so two
//! processes deciding on the same counter see each other's effect in full
//! or not at all — the same guarantee the in-process backend gets from its
//! mutex. Redis Cluster is not a goal: a script may touch several keys.
//!
//! Key layout, under the keys the limiter builds:
//! - a window counter is a string holding an integer, expiring `ttl_ms`
//!   after it was created;
//! - a budget is its settled spend (a string, `KEY`) plus its live
//!   reservations: amounts in a hash (`KEY:res:amt`, id → amount) and
//!   expiries in a sorted set (`KEY:res:exp`, id → expiry in the caller's
//!   milliseconds), always written together;
//! - a lease set is a sorted set, id → expiry.
//!
//! Lua numbers are doubles: sums and comparisons are exact up to 2^53
//! (9·10^15 — nine million dollars in nano-dollars, per budget), while
//! stored values are kept as Redis integers (64-bit, exact).

use std::time::Duration;

use async_trait::async_trait;
use bulkhead_quota::{LimitBackend, LimitError, backend::Reserved};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

/// Connecting (every attempt and retry) must finish within this: a server
/// that does not answer should fail the boot promptly, not hang it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One operation's bound, reconnection included. A decision waits for its
/// counter, so a stalled server must turn into a refusal (`Unavailable`),
/// not a hung request; 2 s leaves room for a busy two-core machine.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection attempts after a broken connection. Few: a request that
/// finds Redis gone is refused at once and the next one tries again,
/// rather than every request queueing behind a long backoff.
const RETRIES: usize = 2;

/// `add_within`: KEYS[1] counter; ARGV amount, limit, ttl_ms.
const ADD_WITHIN: &str = r"
local cur = redis.call('GET', KEYS[1])
if (tonumber(cur) or 0) + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return 0
end
redis.call('INCRBY', KEYS[1], ARGV[1])
if not cur and tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
";

/// `adjust`: KEYS[1] counter; ARGV delta, ttl_ms. INCRBY keeps the
/// counter's expiry; the floor at zero must keep it too (KEEPTTL).
const ADJUST: &str = r"
local existed = redis.call('EXISTS', KEYS[1])
if redis.call('INCRBY', KEYS[1], ARGV[1]) < 0 then
  redis.call('SET', KEYS[1], 0, 'KEEPTTL')
end
if existed == 0 and tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
";

/// `reserve`: KEYS three per budget (spend, amounts, expiries); ARGV id,
/// amount, now_ms, expires_ms, life_ms (how long the reservation keys must
/// at least live), then one limit per budget. Returns the decision (1/0)
/// followed by each budget's settled spend.
const RESERVE: &str = r"
local id, amount, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local out = {0}
local ok = 1
for i = 1, #KEYS / 3 do
  local spent_key, amounts, expiries = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local gone = redis.call('ZRANGEBYSCORE', expiries, '-inf', now)
  if #gone > 0 then
    for _, rid in ipairs(gone) do
      redis.call('HDEL', amounts, rid)
    end
    redis.call('ZREMRANGEBYSCORE', expiries, '-inf', now)
  end
  local spent = redis.call('GET', spent_key) or '0'
  local held = 0
  for _, v in ipairs(redis.call('HVALS', amounts)) do
    held = held + tonumber(v)
  end
  if tonumber(spent) + held + amount > tonumber(ARGV[5 + i]) then
    ok = 0
  end
  out[i + 1] = spent
end
if ok == 1 then
  local life = tonumber(ARGV[5])
  for i = 1, #KEYS / 3 do
    local amounts, expiries = KEYS[3*i-1], KEYS[3*i]
    redis.call('HSET', amounts, id, ARGV[2])
    redis.call('ZADD', expiries, ARGV[4], id)
    if redis.call('PTTL', expiries) < life then
      redis.call('PEXPIRE', amounts, ARGV[5])
      redis.call('PEXPIRE', expiries, ARGV[5])
    end
  end
end
out[1] = ok
return out
";

/// `settle`: KEYS three per budget, as for `reserve`; ARGV id, actual,
/// ttl_ms. Returns each budget's settled spend after.
const SETTLE: &str = r"
local out = {}
for i = 1, #KEYS / 3 do
  local spent_key = KEYS[3*i-2]
  redis.call('HDEL', KEYS[3*i-1], ARGV[1])
  redis.call('ZREM', KEYS[3*i], ARGV[1])
  local existed = redis.call('EXISTS', spent_key)
  redis.call('INCRBY', spent_key, ARGV[2])
  if existed == 0 and tonumber(ARGV[3]) > 0 then
    redis.call('PEXPIRE', spent_key, ARGV[3])
  end
  out[i] = redis.call('GET', spent_key)
end
return out
";

/// `acquire`: KEYS[1] lease set; ARGV id, limit, now_ms, expires_ms,
/// life_ms.
const ACQUIRE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[5]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return 1
";

/// The scripts, hashed once.
struct Scripts {
    add_within: Script,
    adjust: Script,
    reserve: Script,
    settle: Script,
    acquire: Script,
}

/// Limit counters in one Redis server, over one multiplexed connection
/// that reconnects by itself: concurrent operations are pipelined on it
/// rather than each waiting for a connection of its own.
pub struct RedisBackend {
    conn: ConnectionManager,
    scripts: Scripts,
    /// The URL with any password masked: what errors may show.
    shown: String,
    /// The password, masked out of any message that might echo it.
    password: Option<String>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

/// `url` with its password (in the authority or a `pass=` query parameter)
/// replaced by `***`, fit for errors and logs. Whatever does not parse as a
/// Redis URL is not shown at all: it might be a secret pasted in the wrong
/// place.
pub fn redacted_url(url: &str) -> String {
    let Some(mut u) = redis::parse_redis_url(url) else {
        return "(a value that is not a Redis URL)".to_owned();
    };
    if u.password().is_some() && u.set_password(Some("***")).is_err() {
        return "(a Redis URL)".to_owned();
    }
    if u.query_pairs().any(|(k, _)| k == "pass") {
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "pass" { "***".into() } else { v };
                (k.into_owned(), v.into_owned())
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(kept);
    }
    u.to_string()
}

fn scrub(message: String, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => message.replace(p, "***"),
        _ => message,
    }
}

impl RedisBackend {
    /// Connects to `url` (`redis://[user[:password]@]host[:port][/db]`)
    /// and checks with a PING that the server answers, all within a few
    /// seconds. Errors name the URL without its password.
    pub async fn connect(url: &str) -> Result<Self, LimitError> {
        let shown = redacted_url(url);
        let client = redis::Client::open(url)
            .map_err(|e| LimitError(format!("invalid Redis URL {shown}: {e}")))?;
        let password = client
            .get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_owned);
        let fail = |what: String| LimitError(scrub(what, password.as_deref()));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(RETRIES);
        let connecting = async {
            let mut conn = ConnectionManager::new_with_config(client, config).await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok::<_, RedisError>(conn)
        };
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(fail(format!("could not connect to Redis at {shown}: {e}")));
            }
            Err(_) => {
                return Err(fail(format!(
                    "could not connect to Redis at {shown}: no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        Ok(Self {
            conn,
            scripts: Scripts {
                add_within: Script::new(ADD_WITHIN),
                adjust: Script::new(ADJUST),
                reserve: Script::new(RESERVE),
                settle: Script::new(SETTLE),
                acquire: Script::new(ACQUIRE),
            },
            shown,
            password,
        })
    }

    /// One PING round trip: whether the server answers (for health
    /// checks), and the floor under every operation's latency.
    pub async fn ping(&self) -> Result<(), LimitError> {
        let mut conn = self.conn.clone();
        let _: String = self
            .run("ping", redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }

    /// Runs one operation within [`OP_TIMEOUT`], its failure named.
    async fn run<T>(
        &self,
        op: &str,
        f: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, LimitError> {
        let message = match tokio::time::timeout(OP_TIMEOUT, f).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => format!("Redis at {}: {op} failed: {e}", self.shown),
            Err(_) => format!(
                "Redis at {}: {op} got no answer within {} s",
                self.shown,
                OP_TIMEOUT.as_secs()
            ),
        };
        Err(LimitError(scrub(message, self.password.as_deref())))
    }
}

/// The reservation keys of budget `key`: amounts, then expiries.
fn reservation_keys(key: &str) -> [String; 2] {
    [format!("{key}:res:amt"), format!("{key}:res:exp")]
}

/// How long keys holding something that expires at `expires_ms` (caller's
/// clock) must live on the server's clock: at least until then, and never
/// zero (PEXPIRE 0 would delete at once).
fn life_ms(now_ms: u64, expires_ms: u64) -> u64 {
    expires_ms.saturating_sub(now_ms).max(1)
}

#[async_trait]
impl LimitBackend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn add_within(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        ttl_ms: u64,
    ) -> Result<bool, LimitError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.add_within.key(key);
        call.arg(amount).arg(limit).arg(ttl_ms);
        let admitted: i64 = self.run("add_within", call.invoke_async(&mut conn)).await?;
        Ok(admitted == 1)
    }

    async fn adjust(&self, key: &str, delta: i64, ttl_ms: u64) -> Result<(), LimitError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.adjust.key(key);
        call.arg(delta).arg(ttl_ms);
        let _: i64 = self.run("adjust", call.invoke_async(&mut conn)).await?;
        Ok(())
    }

    async fn seed(&self, key: &str, spent: u64, ttl_ms: u64) -> Result<(), LimitError> {
        // One command is atomic already: set only if absent, with expiry.
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(spent).arg("NX");
        if ttl_ms > 0 {
            cmd.arg("PX").arg(ttl_ms);
        }
        let mut conn = self.conn.clone();
        // `OK` when set, nil when already known: both fine.
        let _: Option<String> = self.run("seed", cmd.query_async(&mut conn)).await?;
        Ok(())
    }

    async fn reserve(
        &self,
        budgets: &[(String, u64)],
        id: &str,
        amount: u64,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<Reserved, LimitError> {
        let mut call = self.scripts.reserve.prepare_invoke();
        for (key, _) in budgets {
            let [amounts, expiries] = reservation_keys(key);
            call.key(key).key(amounts).key(expiries);
        }
        call.arg(id)
            .arg(amount)
            .arg(now_ms)
            .arg(expires_ms)
            .arg(life_ms(now_ms, expires_ms));
        for (_, limit) in budgets {
            call.arg(*limit);
        }
        let mut conn = self.conn.clone();
        let out: Vec<u64> = self.run("reserve", call.invoke_async(&mut conn)).await?;
        match out.split_first() {
            Some((ok, spent)) if spent.len() == budgets.len() => Ok(Reserved {
                ok: *ok == 1,
                spent: spent.to_vec(),
            }),
            _ => Err(LimitError(format!(
                "Redis at {}: reserve answered {} values for {} budgets",
                self.shown,
                out.len(),
                budgets.len()
            ))),
        }
    }

    async fn settle(
        &self,
        keys: &[String],
        id: &str,
        actual: u64,
        ttl_ms: u64,
    ) -> Result<Vec<u64>, LimitError> {
        let mut call = self.scripts.settle.prepare_invoke();
        for key in keys {
            let [amounts, expiries] = reservation_keys(key);
            call.key(key).key(amounts).key(expiries);
        }
        call.arg(id).arg(actual).arg(ttl_ms);
        let mut conn = self.conn.clone();
        let after: Vec<u64> = self.run("settle", call.invoke_async(&mut conn)).await?;
        if after.len() != keys.len() {
            return Err(LimitError(format!(
                "Redis at {}: settle answered {} values for {} budgets",
                self.shown,
                after.len(),
                keys.len()
            )));
        }
        Ok(after)
    }

    async fn acquire(
        &self,
        key: &str,
        id: &str,
        limit: u64,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<bool, LimitError> {
        let mut call = self.scripts.acquire.key(key);
        call.arg(id)
            .arg(limit)
            .arg(now_ms)
            .arg(expires_ms)
            .arg(life_ms(now_ms, expires_ms));
        let mut conn = self.conn.clone();
        let taken: i64 = self.run("acquire", call.invoke_async(&mut conn)).await?;
        Ok(taken == 1)
    }

    async fn release(&self, key: &str, id: &str) -> Result<(), LimitError> {
        // One command is atomic already; an emptied set disappears.
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(key).arg(id);
        let mut conn = self.conn.clone();
        let _: i64 = self.run("release", cmd.query_async(&mut conn)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_passwords() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://:hunter2@10.0.0.1:6380/2",
                "redis://:***@10.0.0.1:6380/2",
            ),
            (
                "redis://app:hunter2@cache.internal",
                "redis://app:***@cache.internal",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&pass=hunter2",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            ("hunter2", "(a value that is not a Redis URL)"),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
    }

    #[test]
    fn passwords_are_scrubbed_from_messages() {
        assert_eq!(
            scrub("AUTH hunter2 refused".into(), Some("hunter2")),
            "AUTH *** refused"
        );
        assert_eq!(scrub("x".into(), Some("")), "x");
    }
}
