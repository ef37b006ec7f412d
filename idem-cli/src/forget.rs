//! `idem forget`: an operator deletes a recorded result before its TTL runs out.

use std::io::Write;

use clap::Args;
use idem_runtime::store::{Ownership, Status};

use crate::records::{changed_meanwhile, confirmed_unchanged, find, kind, parse_key_prefix};
use crate::{Ctx, Failure};

/// The long help of `idem forget`.
pub(crate) const FORGET_HELP: &str = "\
Delete a recorded result (a value, or an error declared final with cache_err) before its TTL
runs out, so that the next call of the key runs its body again.

For a result that should not be replayed any more: recorded by a bug, or an error that was
not final after all. The next call makes the side effect again, so forget only what you know
must be done again. Only completed records are forgotten: a key in progress, in doubt or parked
for review is `idem unlock`ed or `idem settle`d instead, and a saga's outcome goes with its
log. The deletion names the record's fencing token, so a record that changed meanwhile is left
alone (exit 1).

A process that keeps results in a ReplayCache replays a forgotten result until its entry is
max_age old (30 s by default): this command reaches the store, not the processes' memory.";

/// `idem forget`.
#[derive(Debug, Args)]
pub(crate) struct ForgetArgs {
    /// The key, or a prefix of its hex digits that only one record has
    #[arg(value_name = "KEY", value_parser = parse_key_prefix)]
    key: String,

    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    yes: bool,
}

/// `idem forget`: checks, asks, deletes under the record's token.
pub(crate) async fn forget(
    ctx: &Ctx,
    args: &ForgetArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let record = find(ctx, &args.key).await?;
    let (key, action, token) = (record.key, &record.action, record.token);
    let what = format!("key {key} (`{action}`) in {}", ctx.label);
    if record.status != Status::Completed {
        return Err(Failure::refused(format!(
            "{what} is {}: only a recorded result is forgotten; `idem unlock` releases a key \
             whose effect did not happen, `idem settle` records one whose effect did",
            kind(&record)
        )));
    }
    let saga = ctx
        .store
        .read_saga(&key)
        .await
        .map_err(|error| ctx.failed(format!("read the saga log of key {key}"), error))?;
    if let Some(log) = saga {
        return Err(Failure::refused(format!(
            "{what} is the outcome of saga `{}`: it goes with the saga's log, not by itself",
            crate::table::one_line(&log.id)
        )));
    }
    let question = format!(
        "Forget the result of key {key} (`{action}`, {} under token {token})? The next call \
         will run its body again. [y/N] ",
        kind(&record)
    );
    confirmed_unchanged(ctx, &record, args.yes, &question, "forgotten").await?;
    let forgotten = ctx
        .store
        .forget_result(&key, token)
        .await
        .map_err(|error| ctx.failed(format!("forget key {key}"), error))?;
    match forgotten {
        Ownership::Held => {
            writeln!(
                out,
                "forgot key {key} (`{action}`, was {} under token {token}): the next call runs \
                 its body",
                kind(&record)
            )?;
            Ok(())
        }
        Ownership::Lost => Err(changed_meanwhile(ctx, &record, "forgotten")),
    }
}
