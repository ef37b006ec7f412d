//! `idem purge`: deletes expired records in batches, with a progress bar on a terminal.

use std::io::Write;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{Ctx, Failure};

/// The progress bar: `purging ████░░░░ 2000/5120 records (1840/s, 2s left)`.
const BAR: &str = "purging {bar:40} {pos}/{len} records ({per_sec}, {eta} left)";

/// How many records one round trip deletes.
const BATCH: usize = 1000;

/// The long help of `idem purge`.
pub(crate) const PURGE_HELP: &str = "\
Delete the expired records: completed records (values and recorded errors) whose TTL ran out,
with the logs of the sagas they ended, and claims whose owner died (or that were left in doubt)
once both their lease and their action's TTL have run out.

Kept: claims whose lease or TTL still runs (the next call of the same arguments resumes them;
see `idem settle` and `idem unlock`), claims of sagas (idem::recover finds a dead saga through
its claim), claims made before idem recorded their TTL, records parked for review, and the logs
of sagas that need attention, were interrupted or were resolved by hand (with their note):
those are for an operator or their code. Records are deleted 1000 at a time, with
a progress bar on stderr when there are more than 1000 and stderr is a terminal; the count is
printed at the end.

Stores purge on their own too, so there is often little left: SQLite purges whenever a store
opens the file (this command's included) and every 1024 recorded results; PostgreSQL every
1024 recorded results; Redis deletes an expired record by itself when it expires, so this
command finds none there (it deletes the expiry index an older idem kept, if it is left).";

/// `idem purge`.
#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// Delete the expired records (the default, and the only kind purged)
    #[arg(long)]
    expired: bool,

    /// Only count the records that would be deleted
    #[arg(long)]
    dry_run: bool,
}

/// `idem purge`: counts, or deletes in batches while a progress bar runs.
pub(crate) async fn purge(ctx: &Ctx, args: &PurgeArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let _ = args.expired; // the only mode
    let expired = ctx
        .store
        .count_expired()
        .await
        .map_err(|error| ctx.failed("count the expired records", error))?;
    if args.dry_run {
        writeln!(
            out,
            "{expired} expired {} would be purged from {} (dry run: nothing deleted)",
            records(expired),
            ctx.label
        )?;
        return Ok(());
    }
    // On stderr, and only for more than one batch; hidden when stderr is not a terminal
    // (scripts, tests).
    let target = if expired > BATCH as u64 {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(expired), target);
    if let Ok(style) = ProgressStyle::with_template(BAR) {
        bar.set_style(style);
    }
    let mut purged: u64 = 0;
    loop {
        let batch = match ctx.store.purge_expired_batch(BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                bar.abandon();
                return Err(ctx.failed(
                    format!("purge expired records (after {purged} purged)"),
                    error,
                ));
            }
        };
        if batch == 0 {
            break;
        }
        purged += batch;
        // More may expire while we purge.
        if purged > bar.length().unwrap_or(0) {
            bar.set_length(purged);
        }
        bar.set_position(purged);
    }
    bar.finish_and_clear();
    writeln!(
        out,
        "purged {purged} expired {} from {}",
        records(purged),
        ctx.label
    )?;
    Ok(())
}

/// `record` or `records`.
fn records(count: u64) -> &'static str {
    if count == 1 {
        "record"
    } else {
        "records"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_progress_bar_template_is_valid() {
        assert!(indicatif::ProgressStyle::with_template(super::BAR).is_ok());
        assert_eq!(super::records(1), "record");
        assert_eq!(super::records(2), "records");
    }
}
