//! `idem sagas`, `idem saga`, `idem resolve`: the logs of sagas.

use std::io::Write;

use clap::Args;
use idem_runtime::store::{SagaLog, SagaQuery, SagaStatus, StepRecord};
use serde_json::{json, Value};

use crate::records::{hidden, json_value, parse_key_prefix, parse_limit, shown_json};
use crate::table::{self, Table};
use crate::time;
use crate::{print_json, Ctx, Failure};

/// `idem sagas`.
#[derive(Debug, Args)]
pub(crate) struct SagasArgs {
    /// Only sagas in this status: running, compensating, completed, compensated,
    /// needs-attention, interrupted or resolved (`_` works too)
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    status: Option<SagaStatus>,

    /// At most this many sagas, the latest status change first
    #[arg(long, value_name = "N", default_value_t = SagaQuery::DEFAULT_LIMIT, value_parser = parse_limit)]
    limit: usize,

    /// Print a JSON array of sagas (with their steps) instead of a table
    #[arg(long)]
    json: bool,
}

/// `idem saga`.
#[derive(Debug, Args)]
pub(crate) struct SagaArgs {
    /// The saga's id, as its code gave it to `Saga::new`
    #[arg(value_name = "ID")]
    id: String,

    /// Print a JSON array of the sagas of this id (one, unless several namespaces use it)
    #[arg(long)]
    json: bool,
}

/// The long help of `idem resolve`.
pub(crate) const RESOLVE_HELP: &str = "\
Mark a NEEDS_ATTENTION saga as settled by hand, keeping your note in its log.

A saga needs attention when a compensation still failed after its retries, or a step failed
after an irreversible one: what is left to do is in `idem saga ID`. Do it by hand (refund,
delete, email), then resolve the saga with a note saying what you did. It is then over:
every later run of its id gets idem::Error::SagaResolved with your note, and runs nothing.
A saga in any other status is refused (exit 1).";

/// `idem resolve`.
#[derive(Debug, Args)]
pub(crate) struct ResolveArgs {
    /// The saga's id, as its code gave it to `Saga::new`
    #[arg(value_name = "SAGA_ID")]
    id: String,

    /// What was done by hand; kept in the saga's log and given to later runs of its id
    #[arg(long, value_name = "TEXT")]
    note: String,

    /// Which saga, by a prefix of its key, when sagas of several namespaces share the id
    #[arg(long, value_name = "KEY", value_parser = parse_key_prefix)]
    key: Option<String>,
}

/// A saga status on the command line: `needs-attention` or `needs_attention`.
pub(crate) fn parse_status(text: &str) -> Result<SagaStatus, String> {
    SagaStatus::parse(&text.replace('-', "_")).ok_or_else(|| {
        let names: Vec<String> = SagaStatus::ALL
            .iter()
            .map(|status| status.as_str().replace('_', "-"))
            .collect();
        format!("expected one of {}", names.join(", "))
    })
}

/// `idem sagas`: a table, or a JSON array.
pub(crate) async fn list(ctx: &Ctx, args: &SagasArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let mut query = SagaQuery::new().limit(args.limit.saturating_add(1));
    if let Some(status) = args.status {
        query = query.status(status);
    }
    let mut logs = ctx
        .store
        .list_sagas(&query)
        .await
        .map_err(|error| ctx.failed("list the sagas", error))?;
    let more = logs.len() > args.limit;
    logs.truncate(args.limit);
    if args.json {
        let listed = logs.iter().map(|log| saga_json(log, ctx)).collect();
        return print_json(out, &Value::Array(listed));
    }
    let mut table = Table::new(&["id", "status", "steps", "updated", "error"]).right(&[2]);
    for log in &logs {
        table.row(vec![
            log.id.clone(),
            log.status.to_string(),
            log.steps.len().to_string(),
            format!("{} ago", time::age(log.updated_at, ctx.now)),
            table::truncate(log.error.as_deref().unwrap_or(""), 70),
        ]);
    }
    if table.is_empty() {
        crate::note!("no sagas match in {}", ctx.label);
        return Ok(());
    }
    out.write_all(table.render().as_bytes())?;
    if more {
        crate::note!(
            "(the {} latest by status change shown; --limit N shows more)",
            logs.len()
        );
    }
    Ok(())
}

/// `idem saga`: the log and its steps.
pub(crate) async fn show(ctx: &Ctx, args: &SagaArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let logs = find(ctx, &args.id).await?;
    if args.json {
        let shown = logs.iter().map(|log| saga_json(log, ctx)).collect();
        return print_json(out, &Value::Array(shown));
    }
    let mut text = String::new();
    for (n, log) in logs.iter().enumerate() {
        if n > 0 {
            text.push('\n');
        }
        text.push_str(&describe(log, ctx));
    }
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// `idem resolve`: settles a saga that needs attention.
pub(crate) async fn resolve(
    ctx: &Ctx,
    args: &ResolveArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let note = args.note.trim();
    if note.is_empty() {
        return Err(Failure::usage(
            "--note must say what was done by hand: it is kept in the saga's log",
        ));
    }
    let mut logs = find(ctx, &args.id).await?;
    if let Some(prefix) = &args.key {
        logs.retain(|log| log.key.to_string().starts_with(prefix.as_str()));
        if logs.is_empty() {
            return Err(Failure::refused(format!(
                "no saga `{}` whose key starts with `{prefix}` in {}",
                args.id, ctx.label
            )));
        }
    }
    if logs.len() > 1 {
        let keys: Vec<String> = logs
            .iter()
            .map(|log| format!("{} ({})", log.key, log.status))
            .collect();
        return Err(Failure::refused(format!(
            "saga id `{}` is ambiguous in {}: sagas of several namespaces have it: {}; pass \
             --key with a prefix of the one to resolve",
            args.id,
            ctx.label,
            keys.join(", ")
        )));
    }
    let log = &logs[0];
    let what = format!("saga `{}` (key {}) in {}", log.id, log.key, ctx.label);
    if log.status != SagaStatus::NeedsAttention {
        return Err(Failure::refused(format!(
            "{what} is {}, not needs_attention: only a saga that needs attention is resolved \
             by hand",
            log.status
        )));
    }
    let resolved = ctx
        .store
        .resolve_saga(&log.key, note)
        .await
        .map_err(|error| {
            ctx.failed(
                format!("resolve saga `{}` (key {})", log.id, log.key),
                error,
            )
        })?;
    if !resolved {
        let now = match ctx.store.read_saga(&log.key).await {
            Ok(Some(log)) => log.status.to_string(),
            Ok(None) => "gone".to_owned(),
            Err(_) => "unknown".to_owned(),
        };
        return Err(Failure::refused(format!(
            "{what} changed meanwhile (it is now {now}): it was not resolved"
        )));
    }
    writeln!(
        out,
        "resolved saga `{}` (was needs_attention); note kept: {}",
        table::one_line(&log.id),
        table::one_line(note)
    )?;
    Ok(())
}

/// The logs of the sagas of id `id` (one, unless several namespaces use it).
async fn find(ctx: &Ctx, id: &str) -> Result<Vec<SagaLog>, Failure> {
    let logs = ctx
        .store
        .list_sagas(&SagaQuery::new().id(id))
        .await
        .map_err(|error| ctx.failed(format!("look up saga `{id}`"), error))?;
    if logs.is_empty() {
        return Err(Failure::refused(format!(
            "no saga with id `{id}` in {}",
            ctx.label
        )));
    }
    Ok(logs)
}

/// One saga for a person to read.
fn describe(log: &SagaLog, ctx: &Ctx) -> String {
    let mut text = String::new();
    let mut line = |label: &str, value: &str| {
        text.push_str(&format!("{label:<8} {}\n", table::one_line(value)));
    };
    line("saga", &log.id);
    line("key", &log.key.to_string());
    line("status", log.status.as_str());
    line("updated", &time::stamp(log.updated_at, ctx.now));
    if let Some(error) = &log.error {
        line("error", error);
    }
    if let Some(note) = &log.note {
        line("note", note);
    }
    if let Some(hint) = hint(log) {
        line("next", &hint);
    }
    text.push_str(&format!("steps    {}\n", log.steps.len()));
    for step in &log.steps {
        text.push_str(&describe_step(step, ctx));
    }
    text
}

/// What an operator may do about a saga in its status.
fn hint(log: &SagaLog) -> Option<String> {
    match log.status {
        SagaStatus::NeedsAttention => Some(format!(
            "undo or finish by hand what the steps below left, then \
             `idem resolve {} --note \"what you did\"`",
            log.id
        )),
        SagaStatus::Interrupted => {
            Some("its code carries it forward when it runs this id again".to_owned())
        }
        _ => None,
    }
}

/// One step: a heading, then its arguments, output and error.
fn describe_step(step: &StepRecord, ctx: &Ctx) -> String {
    let mut text = format!(
        "  {}. {}  {}{}\n",
        step.index,
        table::one_line(&step.name),
        step.state,
        if step.irreversible {
            "  (irreversible)"
        } else {
            ""
        }
    );
    let mut field = |label: &str, value: &str| {
        text.push_str(&format!("       {label:<7} {}\n", table::one_line(value)));
    };
    field("key", &step.key.to_string());
    let shown = |bytes: &[u8]| hidden(ctx, bytes).unwrap_or_else(|| compact(bytes));
    field("args", &shown(&step.args));
    if let Some(output) = &step.output {
        field("output", &shown(output));
    }
    if let Some(error) = &step.error {
        field("error", error);
    }
    text
}

/// Stored JSON on one line (as stored, when it is not JSON).
fn compact(bytes: &[u8]) -> String {
    serde_json::to_string(&json_value(bytes))
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}

/// A saga as JSON (see the crate docs for its fields).
fn saga_json(log: &SagaLog, ctx: &Ctx) -> Value {
    let steps: Vec<Value> = log
        .steps
        .iter()
        .map(|step| {
            json!({
                "index": step.index,
                "name": step.name,
                "key": step.key.to_string(),
                "irreversible": step.irreversible,
                "state": step.state.as_str(),
                "args": shown_json(ctx, &step.args),
                "output": step.output.as_deref().map(|output| shown_json(ctx, output)),
                "error": step.error,
            })
        })
        .collect();
    json!({
        "id": log.id,
        "key": log.key.to_string(),
        "status": log.status.as_str(),
        "error": log.error,
        "note": log.note,
        "updated_at": time::rfc3339(log.updated_at),
        "steps": steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_saga_status_is_accepted() {
        for status in SagaStatus::ALL {
            assert_eq!(parse_status(&status.as_str().replace('_', "-")), Ok(status));
            assert_eq!(parse_status(status.as_str()), Ok(status));
        }
        assert!(parse_status("stuck")
            .unwrap_err()
            .contains("needs-attention, interrupted, resolved"));
    }
}
