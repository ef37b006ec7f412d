//! `idem keys`, `idem show`, `idem unlock`: the records of `#[idempotent]` calls.

use std::io::{self, BufRead, IsTerminal, Write};
use std::str::FromStr;

use clap::Args;
use idem_runtime::store::{Ownership, Record, RecordKind, RecordQuery, Status, StoredOutcome};
use idem_runtime::Key;
use serde_json::{json, Value};

use crate::table::{self, Table};
use crate::time;
use crate::{print_json, Ctx, Failure};

/// `idem keys`.
#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    /// Only records of this status: in-progress, completed, failed (an error recorded with
    /// cache_err) or needs-review (`_` works too)
    #[arg(long, value_name = "STATUS", value_parser = parse_kind)]
    status: Option<RecordKind>,

    /// Only records of this action (the function's name, or its `name = …`)
    #[arg(long, value_name = "NAME")]
    action: Option<String>,

    /// At most this many records, newest first
    #[arg(long, value_name = "N", default_value_t = RecordQuery::DEFAULT_LIMIT,
          value_parser = parse_limit)]
    limit: usize,

    /// Print a JSON array of records instead of a table
    #[arg(long)]
    json: bool,
}

/// The long help of `idem unlock`.
pub(crate) const UNLOCK_HELP: &str = "\
Release a stuck IN_PROGRESS or NEEDS_REVIEW record so that the next call runs its body again.

Do this once you know whether the side effect happened: a key stuck IN_PROGRESS is one whose
owner died (or was cut off) inside the body, and a NEEDS_REVIEW key is one idem parked for you
for that reason (on_stale = review). Completed records are refused: their result is replayed
until their TTL runs out. An IN_PROGRESS record whose lease is still live is refused unless
--force: its owner may still be running. So is the claim of a saga that is running or
compensating: idem::recover takes such a saga over once its owner died, and a released claim
would hide it from recovery. The release names the record's fencing token, so a record that
changed meanwhile is left alone (exit 1).";

/// `idem show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The key, or a prefix of its hex digits that only one record has
    #[arg(value_name = "KEY", value_parser = parse_key_prefix)]
    key: String,

    /// Print the record as a JSON object instead
    #[arg(long)]
    json: bool,
}

/// `idem unlock`.
#[derive(Debug, Args)]
pub(crate) struct UnlockArgs {
    /// The key, or a prefix of its hex digits that only one record has
    #[arg(value_name = "KEY", value_parser = parse_key_prefix)]
    key: String,

    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    yes: bool,

    /// Release an IN_PROGRESS record even though its owner's lease is still live, or the
    /// claim of a running saga
    #[arg(long)]
    force: bool,
}

/// A status on the command line: `in-progress` or `in_progress`.
pub(crate) fn parse_kind(text: &str) -> Result<RecordKind, String> {
    RecordKind::parse(&text.replace('-', "_")).ok_or_else(|| {
        let names: Vec<String> = RecordKind::ALL
            .iter()
            .map(|kind| kind.as_str().replace('_', "-"))
            .collect();
        format!("expected one of {}", names.join(", "))
    })
}

/// A `--limit`: at least 1.
pub(crate) fn parse_limit(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) | Err(_) => Err("expected a whole number of at least 1".into()),
        Ok(limit) => Ok(limit),
    }
}

/// A key or a prefix of one: 1 to 64 hex digits, kept in lowercase.
pub(crate) fn parse_key_prefix(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "a key is 64 hex digits; give all of them or a prefix (as `idem keys` shows)".into(),
        );
    }
    Ok(text.to_ascii_lowercase())
}

/// `idem keys`: a table, or a JSON array.
pub(crate) async fn keys(ctx: &Ctx, args: &KeysArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let mut query = RecordQuery::new().limit(args.limit.saturating_add(1));
    if let Some(kind) = args.status {
        query = query.kind(kind);
    }
    if let Some(action) = &args.action {
        query = query.action(action.clone());
    }
    let mut records = ctx
        .store
        .list_records(&query)
        .await
        .map_err(|error| ctx.failed("list the records", error))?;
    let more = records.len() > args.limit;
    records.truncate(args.limit);

    if args.json {
        let listed: Vec<Value> = records
            .iter()
            .map(|record| record_json(record, ctx, false))
            .collect();
        return print_json(out, &Value::Array(listed));
    }
    let mut table = Table::new(&["action", "key", "status", "token", "age", "expires"]).right(&[3]);
    for record in &records {
        table.row(vec![
            record.action.clone(),
            record.key.short(),
            kind(record).to_string(),
            record.token.to_string(),
            time::age(record.created_at, ctx.now),
            time::expiry(record.expires_at, ctx.now),
        ]);
    }
    if table.is_empty() {
        crate::note!("no records match in {}", ctx.label);
        return Ok(());
    }
    out.write_all(table.render().as_bytes())?;
    if more {
        crate::note!("(the {} newest shown; --limit N shows more)", records.len());
    }
    Ok(())
}

/// `idem show`: the record and its stored result.
pub(crate) async fn show(ctx: &Ctx, args: &ShowArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let record = find(ctx, &args.key).await?;
    if args.json {
        return print_json(out, &record_json(&record, ctx, true));
    }
    let now = ctx.now;
    let kind = kind(&record);
    let mut text = String::new();
    let mut line = |label: &str, value: String| {
        text.push_str(&format!("{label:<12} {}\n", table::one_line(&value)));
    };
    line("key", record.key.to_string());
    line("action", record.action.clone());
    line("status", kind.to_string());
    line("token", record.token.to_string());
    line("fingerprint", hex(record.fingerprint.as_bytes()));
    line("created", time::stamp(record.created_at, now));
    let until = match record.status {
        Status::InProgress => "lease ends",
        _ => "expires",
    };
    line(
        until,
        record
            .expires_at
            .map_or_else(|| "never".to_owned(), |at| time::stamp(at, now)),
    );
    line("meaning", meaning(&record, ctx));
    let (label, bytes) = match &record.outcome {
        Some(StoredOutcome::Ok(bytes)) => ("result:", bytes),
        Some(StoredOutcome::Err(bytes)) => ("error (declared final with cache_err):", bytes),
        None => ("", &Vec::new()),
    };
    if record.outcome.is_some() {
        match hidden(ctx, bytes) {
            Some(placeholder) => text.push_str(&format!("{label} {placeholder}\n")),
            None => {
                text.push_str(label);
                text.push('\n');
                text.push_str(&pretty(bytes));
            }
        }
    }
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// `idem unlock`: checks, asks, releases under the record's token.
pub(crate) async fn unlock(
    ctx: &Ctx,
    args: &UnlockArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let record = settleable(ctx, &args.key, args.force, "unlock").await?;
    let (key, action, token) = (record.key, &record.action, record.token);
    let question = format!(
        "Unlock key {key} (`{action}`, {} under token {token})? The next call will run its \
         body again. [y/N] ",
        kind(&record)
    );
    confirmed_unchanged(ctx, &record, args.yes, &question, "unlocked").await?;
    let released = ctx
        .store
        .release(&key, token)
        .await
        .map_err(|error| ctx.failed(format!("unlock key {key}"), error))?;
    match released {
        Ownership::Held => {
            writeln!(
                out,
                "unlocked key {key} (`{action}`, was {} under token {token}): the next call runs its body",
                kind(&record)
            )?;
            Ok(())
        }
        Ownership::Lost => Err(changed_meanwhile(ctx, &record, "released")),
    }
}

/// The record of `prefix`, if an operator may settle it (`verb`: unlock it, or record its
/// result): not completed, not a live lease unless `force`, not the claim of a saga that
/// recovery will take over unless `force`.
pub(crate) async fn settleable(
    ctx: &Ctx,
    prefix: &str,
    force: bool,
    verb: &str,
) -> Result<Record, Failure> {
    let record = find(ctx, prefix).await?;
    let (key, action, token) = (record.key, &record.action, record.token);
    let what = format!("key {key} (`{action}`) in {}", ctx.label);
    match record.status {
        Status::Completed => {
            return Err(Failure::refused(format!(
                "{what} is {}: there is nothing to {verb}; its {} is replayed to every \
                 duplicate call until it expires ({})",
                kind(&record),
                if kind(&record) == RecordKind::Failed {
                    "error"
                } else {
                    "result"
                },
                time::expiry(record.expires_at, ctx.now)
            )))
        }
        Status::InProgress if !force && !time::is_past(record.expires_at, ctx.now) => {
            return Err(Failure::refused(format!(
                "{what} is in progress under token {token} and its lease is live ({}): its \
                 owner may still be running; wait for the lease to run out, or pass --force \
                 if you know the owner is dead",
                time::expiry(record.expires_at, ctx.now).replacen("in ", "ends in ", 1)
            )))
        }
        Status::InProgress | Status::NeedsReview => {}
    }
    if !force {
        let saga = ctx
            .store
            .read_saga(&key)
            .await
            .map_err(|error| ctx.failed(format!("read the saga log of key {key}"), error))?;
        if let Some(log) = saga.filter(|log| log.status.is_active()) {
            return Err(Failure::refused(format!(
                "{what} is the claim of saga `{}`, which is {}: idem::recover takes over a \
                 saga whose owner died and undoes it from its log, and settling its claim \
                 by hand would hide it from recovery; run recovery, or pass --force to \
                 {verb} it anyway",
                table::one_line(&log.id),
                log.status
            )));
        }
    }
    Ok(record)
}

/// Asks `question` (unless `yes`), then looks at the record again: an operator's answer may
/// come much later, and only the record that was confirmed may be settled. An owner that
/// renewed its lease meanwhile is alive, whatever the operator thought. (The write itself
/// checks the token only; the window left is this look's round trip, not the time of a
/// human's answer.)
pub(crate) async fn confirmed_unchanged(
    ctx: &Ctx,
    record: &Record,
    yes: bool,
    question: &str,
    done: &str,
) -> Result<(), Failure> {
    let key = record.key;
    let what = format!("key {key} (`{}`) in {}", record.action, ctx.label);
    if !yes && !confirm(question)? {
        return Err(Failure::refused(format!(
            "{what} was not {done}: not confirmed (answer y, or pass --yes)"
        )));
    }
    let again = ctx
        .store
        .get(&key)
        .await
        .map_err(|error| ctx.failed(format!("read key {key}"), error))?;
    let unchanged = again.as_ref().is_some_and(|now| {
        now.token == record.token
            && now.status == record.status
            && now.expires_at == record.expires_at
    });
    if unchanged {
        Ok(())
    } else {
        Err(Failure::refused(format!(
            "{what} changed while you confirmed (its owner renewed its lease, finished, or \
             another caller took it over): nothing was {done}; look again with `idem show {}`",
            key.short()
        )))
    }
}

/// The refusal of a write whose token no longer held the record.
pub(crate) fn changed_meanwhile(ctx: &Ctx, record: &Record, done: &str) -> Failure {
    let key = record.key;
    Failure::refused(format!(
        "key {key} (`{}`) in {} changed meanwhile (token {} no longer holds it): nothing was \
         {done}; look again with `idem show {}`",
        record.action,
        ctx.label,
        record.token,
        key.short()
    ))
}

/// Asks `question` on stderr and reads the answer from stdin: only `y` or `yes` agree
/// (end of input does not).
fn confirm(question: &str) -> Result<bool, Failure> {
    let mut stderr = io::stderr();
    stderr.write_all(question.as_bytes())?;
    stderr.flush()?;
    let mut answer = String::new();
    let stdin = io::stdin();
    stdin.lock().read_line(&mut answer)?;
    if !stdin.is_terminal() {
        // Nobody typed it, so it was not echoed: show it, and end the prompt's line.
        writeln!(stderr, "{}", table::one_line(answer.trim()))?;
    }
    let answer = answer.trim().to_ascii_lowercase();
    Ok(answer == "y" || answer == "yes")
}

/// The one record whose key starts with `prefix`.
pub(crate) async fn find(ctx: &Ctx, prefix: &str) -> Result<Record, Failure> {
    if let Ok(key) = Key::from_str(prefix) {
        return match ctx.store.get(&key).await {
            Ok(Some(record)) => Ok(record),
            Ok(None) => Err(Failure::refused(format!(
                "no record with key {key} in {}",
                ctx.label
            ))),
            Err(error) => Err(ctx.failed(format!("read key {key}"), error)),
        };
    }
    // A few more than two, to name some of the candidates when the prefix is ambiguous.
    const SHOWN: usize = 5;
    let query = RecordQuery::new().key_prefix(prefix).limit(SHOWN + 1);
    let mut found = ctx
        .store
        .list_records(&query)
        .await
        .map_err(|error| ctx.failed(format!("look up keys starting with `{prefix}`"), error))?;
    match found.len() {
        0 => Err(Failure::refused(format!(
            "no record whose key starts with `{prefix}` in {}",
            ctx.label
        ))),
        1 => Ok(found.remove(0)),
        n => {
            let names: Vec<String> = found
                .iter()
                .take(SHOWN)
                .map(|record| format!("{} (`{}`)", record.key, table::one_line(&record.action)))
                .collect();
            Err(Failure::refused(format!(
                "key prefix `{prefix}` is ambiguous in {}: {}{}; give more digits",
                ctx.label,
                names.join(", "),
                if n > SHOWN { ", and more" } else { "" }
            )))
        }
    }
}

/// The kind an operator sorts a record by.
pub(crate) fn kind(record: &Record) -> RecordKind {
    RecordKind::of(record.status, record.outcome.as_ref())
}

/// What the record's state means for an operator, in a line.
fn meaning(record: &Record, ctx: &Ctx) -> String {
    let expired = time::is_past(record.expires_at, ctx.now);
    match (kind(record), expired) {
        (RecordKind::InProgress, false) => "its owner holds a live lease and is probably still \
             running the body (`idem unlock --force` frees it anyway)"
            .into(),
        (RecordKind::InProgress, true) => "its owner's lease ran out: it died or was cut off \
             inside the body; the next call takes over (or parks it for review), or \
             `idem unlock` frees it now"
            .into(),
        (RecordKind::NeedsReview, _) => "its owner died inside the body and the action says \
             on_stale = review: find out whether the side effect happened, then `idem unlock` \
             lets the next call run the body"
            .into(),
        (RecordKind::Completed, false) => {
            "its result is replayed to every duplicate call until it expires".into()
        }
        (RecordKind::Failed, false) => {
            "its error is replayed to every duplicate call until it expires".into()
        }
        (_, true) => "expired: the next call runs the body again; `idem purge` deletes it".into(),
        (kind, false) => format!("a record of kind {kind}"),
    }
}

/// A record as JSON (see the crate docs for its fields).
fn record_json(record: &Record, ctx: &Ctx, with_outcome: bool) -> Value {
    let mut value = json!({
        "key": record.key.to_string(),
        "action": record.action,
        "status": kind(record).as_str(),
        "token": record.token,
        "fingerprint": hex(record.fingerprint.as_bytes()),
        "created_at": time::rfc3339(record.created_at),
        "expires_at": record.expires_at.map(time::rfc3339),
        "expired": time::is_past(record.expires_at, ctx.now),
    });
    if with_outcome {
        value["outcome"] = match &record.outcome {
            None => Value::Null,
            Some(StoredOutcome::Ok(bytes)) => json!({ "ok": shown_json(ctx, bytes) }),
            Some(StoredOutcome::Err(bytes)) => json!({ "err": shown_json(ctx, bytes) }),
        };
    }
    value
}

/// What is printed in place of a stored value (a result, a step's arguments or output), or
/// `None` to print it: without `--show-values`, its size only, since it may hold personal
/// data; a value sealed by an `EncryptedStore` is shown as its size and key id either way
/// (this command has no keys).
pub(crate) fn hidden(ctx: &Ctx, bytes: &[u8]) -> Option<String> {
    if let Some(key_id) = idem_runtime::store::sealed_key_id(bytes) {
        return Some(format!(
            "<{} bytes, encrypted under key {key_id}>",
            bytes.len()
        ));
    }
    (!ctx.show_values).then(|| format!("<{} bytes; --show-values prints it>", bytes.len()))
}

/// A stored value in JSON output: its JSON with `--show-values`, else the placeholder of
/// [`hidden`] as a string.
pub(crate) fn shown_json(ctx: &Ctx, bytes: &[u8]) -> Value {
    hidden(ctx, bytes).map_or_else(|| json_value(bytes), Value::String)
}

/// Stored bytes as a JSON value: what they parse to, or, for bytes that are not JSON (a
/// foreign record), their text as a string.
pub(crate) fn json_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Stored bytes pretty-printed, ending with a newline; bytes that are not JSON as text, said
/// so.
pub(crate) fn pretty(bytes: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => serde_json::to_string_pretty(&value)
            .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned()),
        Err(_) => format!("(not JSON) {}", String::from_utf8_lossy(bytes)),
    };
    format!("{}\n", table::printable(&text))
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_prefixes_are_checked() {
        assert_eq!(parse_kind("in-progress"), Ok(RecordKind::InProgress));
        assert_eq!(parse_kind("needs_review"), Ok(RecordKind::NeedsReview));
        assert!(parse_kind("done")
            .unwrap_err()
            .contains("in-progress, completed"));
        assert_eq!(parse_key_prefix("9F3a"), Ok("9f3a".to_owned()));
        assert!(parse_key_prefix("xyz").is_err());
        assert!(parse_key_prefix("").is_err());
        assert!(parse_key_prefix(&"a".repeat(65)).is_err());
        assert_eq!(
            parse_limit("0").unwrap_err(),
            "expected a whole number of at least 1"
        );
    }

    #[test]
    fn stored_results_are_pretty_printed() {
        assert_eq!(pretty(br#"{"id":"ch_1"}"#), "{\n  \"id\": \"ch_1\"\n}\n");
        assert_eq!(pretty(b"\xffnot json"), "(not JSON) \u{fffd}not json\n");
        assert_eq!(json_value(b"[1,2]"), json!([1, 2]));
        assert_eq!(json_value(b"oops"), json!("oops"));
    }

    #[tokio::test]
    async fn values_are_hidden_unless_asked_and_sealed_ones_always() {
        use std::sync::Arc;
        use std::time::SystemTime;

        use idem_runtime::store::{EncryptedStore, EncryptionKey, Keyring, MemoryStore, Store};
        use idem_runtime::{Action, Error};

        let mut ctx = Ctx {
            store: Arc::new(MemoryStore::new()),
            label: "the memory store".into(),
            now: SystemTime::now(),
            show_values: false,
        };
        let value = br#"{"email":"ada@example.com"}"#;
        assert_eq!(
            hidden(&ctx, value).as_deref(),
            Some("<27 bytes; --show-values prints it>")
        );
        ctx.show_values = true;
        assert_eq!(hidden(&ctx, value), None);
        assert_eq!(shown_json(&ctx, value), json!({"email": "ada@example.com"}));

        // A value an EncryptedStore sealed, read without its keys: its size and key id.
        let key = EncryptionKey::from_bytes([9; 32]);
        let inner = MemoryStore::new();
        let sealed_store = EncryptedStore::new(inner.clone(), Keyring::new(key.clone()));
        static SEND: Action = Action::new("send");
        SEND.call(&("ada",))
            .unwrap()
            .run::<_, Error, _>(&sealed_store, async { Ok(1) })
            .await
            .unwrap();
        let record = inner.get(&SEND.key(&("ada",)).unwrap()).await.unwrap();
        let Some(StoredOutcome::Ok(sealed)) = record.and_then(|r| r.outcome) else {
            panic!("a recorded result");
        };
        let shown = hidden(&ctx, &sealed).expect("never printed");
        assert!(
            shown.contains(&format!("encrypted under key {}", key.id())),
            "{shown}"
        );
    }
}
