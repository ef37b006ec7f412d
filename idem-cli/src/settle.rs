//! `idem settle`: an operator records the result of a call left in doubt.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use idem_runtime::store::{Ownership, StoredOutcome};
use serde_json::Value;

use crate::records::{changed_meanwhile, confirmed_unchanged, kind, parse_key_prefix, settleable};
use crate::{Ctx, Failure};

/// The long help of `idem settle`.
pub(crate) const SETTLE_HELP: &str = "\
Record the result of a call left in doubt, as if its body had returned it: every later call
of the key replays it, and the body does not run again.

A key is in doubt when its owner died inside the body (IN_PROGRESS with a lease run out), when
its body failed in a way that may have made the effect (in_doubt = …), or when idem parked it
for you (NEEDS_REVIEW). Once you have learned that the effect happened (the charge is in the
provider's dashboard, the email in the mail log), settle the key with what the call would have
returned, as JSON: `idem settle 3f2a… --result '{\"id\":\"ch_1\"}'`. If the effect did not
happen, `idem unlock` the key instead, so that the next call runs the body. The same records
are refused as by unlock (completed records; a live lease or a running saga's claim without
--force), and the write names the record's fencing token, so a record that changed meanwhile
is left alone (exit 1).";

/// `idem settle`.
#[derive(Debug, Args)]
pub(crate) struct SettleArgs {
    /// The key, or a prefix of its hex digits that only one record has
    #[arg(value_name = "KEY", value_parser = parse_key_prefix)]
    key: String,

    /// What the call returned, as JSON (the function's `Ok` value)
    #[arg(long, value_name = "JSON", value_parser = parse_result)]
    result: Value,

    /// How long the result is kept and replayed, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 24 * 60 * 60)]
    ttl: u64,

    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    yes: bool,

    /// Settle an IN_PROGRESS record even though its owner's lease is still live, or the claim
    /// of a running saga
    #[arg(long)]
    force: bool,
}

fn parse_result(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|error| {
        format!("expected the call's result as JSON, as in '{{\"id\":\"ch_1\"}}': {error}")
    })
}

/// `idem settle`: checks, asks, records the result under the record's token.
pub(crate) async fn settle(
    ctx: &Ctx,
    args: &SettleArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let record = settleable(ctx, &args.key, args.force, "settle").await?;
    let (key, action, token) = (record.key, &record.action, record.token);
    let result = args.result.to_string();
    let question = format!(
        "Record {result} as the result of key {key} (`{action}`, {} under token {token})? \
         Every later call replays it. [y/N] ",
        kind(&record)
    );
    confirmed_unchanged(ctx, &record, args.yes, &question, "settled").await?;
    let ttl = Duration::from_secs(args.ttl);
    let recorded = ctx
        .store
        .complete(&key, token, StoredOutcome::Ok(result.into_bytes()), ttl)
        .await
        .map_err(|error| ctx.failed(format!("settle key {key}"), error))?;
    match recorded {
        Ownership::Held => {
            writeln!(
                out,
                "settled key {key} (`{action}`, was {} under token {token}): its result is replayed to every later call",
                kind(&record)
            )?;
            Ok(())
        }
        Ownership::Lost => Err(changed_meanwhile(ctx, &record, "settled")),
    }
}
