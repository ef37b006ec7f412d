//! The operators' walks over the store: Redis keeps no index by action or time, so listing
//! and counting records or saga logs walks their keys with `SCAN`, a page at a time, and
//! keeps the newest while it goes.
//!
//! ```text
//! on every master (one server: the server):
//! SCAN 0 MATCH idem:{ab?}:ab??…?:r          → page 1 of names
//! GET + PEXPIRETIME <page 1> ‖ SCAN c1       → the records of page 1, page 2 of names (sent
//!                                             at once; on a cluster the reads go per bucket)
//! SCAN 0 MATCH idem:{???}:????…?:s          → saga logs: HMGET of their heads the same way,
//! …                                           then the `limit` newest in full
//!                                             (`read_saga`, with their owners' step writes)
//! ```

use std::collections::HashSet;

use redis::Value;

use super::connection::Master;
use super::decode::{bytes, corrupt, named, record, saga_log, text};
use super::layout::{bucket, BUCKET_DIGITS};
use super::{failed, wall_now_ms, Hashes, RedisStore, RECORDS, SAGA_LOGS};
use crate::key::Key;
use crate::store::{
    Record, RecordCount, RecordKind, RecordQuery, RecordTally, SagaLog, SagaQuery, SagaStore,
};
use crate::Error;

/// How many keys the operators' listings ask `SCAN` for at a time (a hint to the server).
const SCAN_COUNT: usize = 1000;

/// How many saga logs a listing reads whole at once (one script each, sent together).
const READS_AT_ONCE: usize = 64;

/// The length of a key in hex, as it sits in the names of the store's hashes.
const KEY_HEX_LEN: usize = 64;

impl RedisStore {
    /// The `SCAN` pattern of the `hashes` whose key starts with `hex` (lowercase hex digits,
    /// at most a key's length): `<prefix>{<bucket>}:<hex>??…?<suffix>`, the store's prefix
    /// escaped, the bucket's digits those of `hex` as far as it goes.
    pub(super) fn pattern(&self, hex: &str, hashes: &Hashes) -> String {
        let wild = |from: usize, to: usize| "?".repeat(to.saturating_sub(from));
        let bucket = hex.get(..BUCKET_DIGITS).unwrap_or(hex);
        format!(
            "{}{{{bucket}{}}}:{hex}{}{}",
            escaped(&self.inner.prefix),
            wild(bucket.len(), BUCKET_DIGITS),
            wild(hex.len(), KEY_HEX_LEN),
            hashes.suffix
        )
    }

    /// The key in the name of one of the `hashes`, if the name is one of theirs.
    fn key_in(&self, name: &[u8], hashes: &Hashes) -> Option<Key> {
        let rest = name
            .strip_prefix(self.inner.prefix.as_bytes())?
            .strip_prefix(b"{")?
            .strip_suffix(hashes.suffix.as_bytes())?;
        let hex = rest.get(BUCKET_DIGITS..)?.strip_prefix(b"}:")?;
        let key: Key = std::str::from_utf8(hex).ok()?.parse().ok()?;
        (rest.get(..BUCKET_DIGITS)? == bucket(&key).as_bytes()).then_some(key)
    }

    /// Sends `pipe` (whose commands touch one bucket, on a cluster) and checks that it got
    /// `answers` answers.
    async fn send(&self, pipe: &redis::Pipeline, answers: usize) -> Result<Vec<Value>, Error> {
        if answers == 0 {
            return Ok(Vec::new());
        }
        let mut connection = self.inner.connection.clone();
        let replies: Vec<Value> = pipe
            .query_async(&mut connection)
            .await
            .map_err(failed(None))?;
        if replies.len() != answers {
            let problem = format!("{} answers to {answers} commands", replies.len());
            return Err(Error::store("redis", None, problem));
        }
        Ok(replies)
    }

    /// The answers of the `per_key` commands `read` adds for each of `keys`, in their order:
    /// one pipeline on one server; on a cluster, which refuses a pipeline across slots, one
    /// per bucket, all sent at once.
    async fn read_keys(
        &self,
        keys: &[Key],
        per_key: usize,
        read: &impl Fn(&mut redis::Pipeline, &Key),
    ) -> Result<Vec<Vec<Value>>, Error> {
        let groups: Vec<Vec<usize>> = if self.inner.connection.is_cluster() {
            let mut by_bucket: std::collections::BTreeMap<String, Vec<usize>> =
                std::collections::BTreeMap::new();
            for (at, key) in keys.iter().enumerate() {
                by_bucket.entry(bucket(key)).or_default().push(at);
            }
            by_bucket.into_values().collect()
        } else {
            vec![(0..keys.len()).collect()]
        };
        let pipes: Vec<(redis::Pipeline, usize)> = groups
            .iter()
            .map(|group| {
                let mut pipe = redis::pipe();
                for &at in group {
                    read(&mut pipe, &keys[at]);
                }
                (pipe, group.len() * per_key)
            })
            .collect();
        let replies = futures_util::future::try_join_all(
            pipes
                .iter()
                .map(|(pipe, answers)| self.send(pipe, *answers)),
        )
        .await?;
        let mut answers = vec![Vec::new(); keys.len()];
        for (group, replies) in groups.iter().zip(replies) {
            let mut replies = replies.into_iter();
            for &at in group {
                // `send` checked that there are `per_key` answers a key.
                answers[at] = replies.by_ref().take(per_key).collect();
            }
        }
        Ok(answers)
    }

    /// The page of `SCAN` at `cursor` on `master`: the next cursor (0 at the end) and the
    /// names found.
    pub(super) async fn next_page(
        &self,
        master: &Master,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<Vec<u8>>), Error> {
        let command = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .clone();
        let page = self.inner.connection.on(master, &command).await?;
        scan_page(page)
            .map_err(|problem| Error::store("redis", None, format!("SCAN answered {problem}")))
    }

    /// Walks the keys of `hashes` that match `pattern` with `SCAN` on every master and hands
    /// each key, once, to `each` with the answers of the `per_key` commands `read` adds for
    /// it. One page's reads go out with the request for the next page.
    async fn scan(
        &self,
        pattern: &str,
        hashes: &Hashes,
        per_key: usize,
        read: impl Fn(&mut redis::Pipeline, &Key),
        mut each: impl FnMut(Key, Vec<Value>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        // SCAN may hand out a key twice (when the server resizes its table meanwhile).
        let mut seen = HashSet::new();
        for master in self.inner.connection.masters().await? {
            let mut cursor = Some(0u64);
            let mut page: Vec<Key> = Vec::new();
            while cursor.is_some() || !page.is_empty() {
                let next = async {
                    match cursor {
                        Some(cursor) => self.next_page(&master, cursor, pattern).await.map(Some),
                        None => Ok(None),
                    }
                };
                let (next, answers) =
                    futures_util::future::try_join(next, self.read_keys(&page, per_key, &read))
                        .await?;
                for (key, answers) in page.drain(..).zip(answers) {
                    each(key, answers)?;
                }
                if let Some((next, names)) = next {
                    cursor = (next != 0).then_some(next);
                    page = names
                        .iter()
                        .filter_map(|name| self.key_in(name, hashes))
                        .filter(|key| seen.insert(*key))
                        .collect();
                }
            }
        }
        Ok(())
    }

    /// Walks every record that matches `pattern` (those as good as gone left out), each read
    /// whole with its `PEXPIRETIME`.
    async fn scan_all_records(
        &self,
        pattern: &str,
        mut each: impl FnMut(Record),
    ) -> Result<(), Error> {
        let now_ms = wall_now_ms();
        let read = |pipe: &mut redis::Pipeline, key: &Key| {
            let name = self.record_key(key);
            pipe.cmd("GET").arg(&name).cmd("PEXPIRETIME").arg(&name);
        };
        self.scan(pattern, &RECORDS, 2, read, |key, mut answers| {
            let expiry = answers.pop().unwrap_or(Value::Nil);
            let value = answers.pop().unwrap_or(Value::Nil);
            let found = record(&key, value, expiry, now_ms).map_err(corrupt(&key, RECORDS.what))?;
            found.into_iter().for_each(&mut each);
            Ok(())
        })
        .await
    }

    /// The records that match `query`, with their results, newest first: one scan that reads
    /// each record whole and keeps the `limit` newest.
    pub(super) async fn scan_records(&self, query: &RecordQuery) -> Result<Vec<Record>, Error> {
        let hex = query.key_prefix.as_deref().unwrap_or_default();
        let mut newest = Newest::new(query.limit, newest_record_first);
        self.scan_all_records(&self.pattern(hex, &RECORDS), |record| {
            if query.matches(&record) {
                newest.push(record);
            }
        })
        .await?;
        Ok(newest.into_vec())
    }

    /// How many records there are of each action and kind.
    pub(super) async fn count_records(&self) -> Result<Vec<RecordCount>, Error> {
        let mut tally = RecordTally::new();
        self.scan_all_records(&self.pattern("", &RECORDS), |record| {
            let kind = RecordKind::of(record.status, record.outcome.as_ref());
            tally.add(&record.action, kind, 1);
        })
        .await?;
        Ok(tally.into_counts())
    }

    /// The saga logs that `query` selects, the latest status change first: a scan of their
    /// heads, then the `limit` newest by their heads' time (a saga's last status write: a
    /// step's write does not touch the head) read whole, with their steps, in that order.
    pub(super) async fn scan_sagas(&self, query: &SagaQuery) -> Result<Vec<SagaLog>, Error> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut newest = Newest::new(query.limit, newest_saga_first);
        let read = |pipe: &mut redis::Pipeline, key: &Key| {
            pipe.cmd("HMGET")
                .arg(self.hash_key(key, SAGA_LOGS.suffix))
                .arg(SAGA_LOGS.head);
        };
        self.scan(
            &self.pattern("", &SAGA_LOGS),
            &SAGA_LOGS,
            1,
            read,
            |key, mut answers| {
                let reply = answers.pop().unwrap_or(Value::Nil);
                let head = named(SAGA_LOGS.head, reply).map_err(corrupt(&key, SAGA_LOGS.what))?;
                let log = saga_log(&key, head, Vec::new(), Vec::new())
                    .map_err(corrupt(&key, SAGA_LOGS.what))?;
                newest.extend(log.filter(|log| query.matches(log)));
                Ok(())
            },
        )
        .await?;
        // Each chosen log read whole as `read_saga` reads it (with its owner's step writes),
        // a few at a time, kept in the order chosen (a log's `updated_at` counts its steps'
        // writes too, which do not order a listing).
        let chosen: Vec<Key> = newest.into_vec().iter().map(|log| log.key).collect();
        let mut logs = Vec::with_capacity(chosen.len());
        for keys in chosen.chunks(READS_AT_ONCE) {
            let found =
                futures_util::future::try_join_all(keys.iter().map(|key| self.read_saga(key)))
                    .await?;
            // A log that went or changed since its head was read is left out.
            logs.extend(found.into_iter().flatten().filter(|log| query.matches(log)));
        }
        Ok(logs)
    }
}

/// `prefix` as a `SCAN` pattern matches it literally: `*`, `?`, `[`, `]` and `\` escaped.
pub(super) fn escaped(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 8);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// A page of `SCAN`: the next cursor (0 at the end) and the names found.
pub(super) fn scan_page(value: Value) -> Result<(u64, Vec<Vec<u8>>), String> {
    let Value::Array(items) = value else {
        return Err(format!("{value:?}"));
    };
    let [cursor, Value::Array(names)] =
        <[Value; 2]>::try_from(items).map_err(|items| format!("{items:?}"))?
    else {
        return Err("no names".to_owned());
    };
    let cursor = text(&cursor)?
        .parse()
        .map_err(|e| format!("a cursor: {e}"))?;
    Ok((
        cursor,
        names.into_iter().map(bytes).collect::<Result<_, _>>()?,
    ))
}

/// The order of [`list_records`](crate::store::Inspect::list_records): newest first, then by
/// key.
fn newest_record_first(a: &Record, b: &Record) -> std::cmp::Ordering {
    b.created_at
        .cmp(&a.created_at)
        .then_with(|| a.key.cmp(&b.key))
}

/// The order of [`list_sagas`](crate::store::Inspect::list_sagas) on logs read from their
/// heads alone (whose time is the last status write): newest first, then by id (and key).
fn newest_saga_first(a: &SagaLog, b: &SagaLog) -> std::cmp::Ordering {
    b.updated_at
        .cmp(&a.updated_at)
        .then_with(|| a.id.cmp(&b.id))
        .then_with(|| a.key.cmp(&b.key))
}

/// The first `limit` of many items in `order`, kept while a scan walks them: sorted and cut
/// whenever twice `limit` are held.
struct Newest<T> {
    items: Vec<T>,
    limit: usize,
    order: fn(&T, &T) -> std::cmp::Ordering,
}

impl<T> Newest<T> {
    fn new(limit: usize, order: fn(&T, &T) -> std::cmp::Ordering) -> Self {
        Newest {
            items: Vec::new(),
            limit,
            order,
        }
    }

    fn push(&mut self, item: T) {
        self.items.push(item);
        if self.items.len() >= self.limit.saturating_mul(2).max(64) {
            self.cut();
        }
    }

    fn extend(&mut self, items: impl IntoIterator<Item = T>) {
        for item in items {
            self.push(item);
        }
    }

    fn cut(&mut self) {
        self.items.sort_by(self.order);
        self.items.truncate(self.limit);
    }

    fn into_vec(mut self) -> Vec<T> {
        self.cut();
        self.items
    }
}

#[cfg(all(test, feature = "conformance"))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::call::Action;
    use crate::conformance::servers::RedisServer;
    use crate::key::Fingerprint;
    use crate::store::{Claim, ClaimRequest, Ownership, Store, StoredOutcome};
    use crate::store::{Inspect, OnStale};

    static TOUCH: Action = Action::new("touch");

    async fn store(prefix: &str) -> Option<RedisStore> {
        let server = RedisServer::shared()?;
        let store = RedisStore::connect(&server.url()).await.expect("connect");
        Some(store.with_prefix(prefix))
    }

    /// Claims `n` fresh keys of `TOUCH` (numbered from `from`), completing every other one.
    async fn fill(store: &RedisStore, from: u32, n: u32) -> Vec<Key> {
        let mut keys = Vec::new();
        for i in from..from + n {
            let key = TOUCH.key(&(i,)).expect("canonical");
            let request = ClaimRequest {
                key: &key,
                fingerprint: &Fingerprint::from(key),
                action: "touch",
                lease: Duration::from_secs(60),
                ttl: Duration::from_secs(3600),
                on_stale: OnStale::TakeOver,
            };
            let Claim::Acquired { token, .. } = store.claim(&request).await.expect("claim") else {
                panic!("a fresh key is acquired");
            };
            if i % 2 == 0 {
                let ok = StoredOutcome::Ok(b"1".to_vec());
                let ttl = Duration::from_secs(60);
                let held = store
                    .complete(&key, token, ok, ttl)
                    .await
                    .expect("complete");
                assert_eq!(held, Ownership::Held);
            }
            keys.push(key);
        }
        keys
    }

    /// A prefix is matched literally: `*`, `?`, `[`, `]` and `\` in it are escaped in the
    /// `SCAN` pattern, so a store does not list the records of another prefix its unescaped
    /// pattern would match.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    async fn a_prefix_with_glob_characters_lists_only_its_own_records() {
        let Some(globby) = store(r"ops[1]*?\:").await else {
            return;
        };
        let Some(other) = store("ops1ab:").await else {
            return;
        };
        let own = fill(&globby, 0, 1).await;
        fill(&other, 100, 2).await;
        let listed: Vec<Key> = globby
            .list_records(&RecordQuery::new())
            .await
            .expect("list")
            .iter()
            .map(|record| record.key)
            .collect();
        assert_eq!(listed, own);
        let counted: u64 = globby
            .record_counts()
            .await
            .expect("counts")
            .iter()
            .map(|row| row.count)
            .sum();
        assert_eq!(counted, 1);
        assert_eq!(
            other
                .list_records(&RecordQuery::new())
                .await
                .expect("list")
                .len(),
            2
        );
    }

    /// More records than a `SCAN` page and than the kept newest hold: each is listed and
    /// counted once, a limit keeps the head of the full order, and a key prefix narrows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    async fn listings_walk_many_pages() {
        let Some(store) = store("pages:").await else {
            return;
        };
        let n = 2 * SCAN_COUNT as u32 + 300;
        let keys = fill(&store, 0, n).await;

        let all = store
            .list_records(&RecordQuery::new().limit(usize::MAX))
            .await
            .expect("list");
        assert_eq!(all.len(), keys.len());
        let unique: HashSet<Key> = all.iter().map(|record| record.key).collect();
        assert_eq!(unique.len(), keys.len(), "each record once");
        assert!(all
            .windows(2)
            .all(|w| newest_record_first(&w[0], &w[1]).is_lt()));

        let first: Vec<Key> = all.iter().take(70).map(|record| record.key).collect();
        let limited: Vec<Key> = store
            .list_records(&RecordQuery::new().limit(70))
            .await
            .expect("list")
            .iter()
            .map(|record| record.key)
            .collect();
        assert_eq!(limited, first, "the limit keeps the head of the order");

        let counts = store.record_counts().await.expect("counts");
        let count = |kind| RecordCount::new("touch".into(), kind, u64::from(n / 2));
        assert_eq!(
            counts,
            [count(RecordKind::InProgress), count(RecordKind::Completed)]
        );

        let hex = keys[0].to_string();
        let narrowed = store
            .list_records(&RecordQuery::new().key_prefix(&hex[..2]).limit(usize::MAX))
            .await
            .expect("list");
        let expected = keys
            .iter()
            .filter(|key| key.to_string().starts_with(&hex[..2]));
        assert_eq!(narrowed.len(), expected.count());
        assert!(narrowed.iter().any(|record| record.key == keys[0]));
    }
}
