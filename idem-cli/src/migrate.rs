//! `idem migrate`: moves a Redis store's keys from an older layout of idem's into the one this
//! idem reads.

use std::io::Write;

use clap::Args;
use idem_runtime::store;

use crate::{redact, Failure};

/// The long help of `idem migrate`.
pub(crate) const MIGRATE_HELP: &str = "\
Move the keys of a Redis store from an older layout of idem's into the one this idem reads.

idem 0.x before Redis Cluster support (layout 1) named a record `<prefix>{<key>}:r`; layout 2
put every key in one of 4,096 buckets so that the store runs on Redis Cluster; this idem
(layout 3) writes a saga step with one native command, to a list of the saga owner's, which an
idem of layout 2 would neither read nor close when it takes a saga over. This idem refuses to
start on a store in an older layout rather than miss its records or its fences. Stop the agents
that run the older idem, run this once (a layout-2 store is only marked: nothing moves), then
start the agents of this one. Running it again is harmless: it moves what is left, and says so
when the store is current already.

SQLite and PostgreSQL stores have nothing to move: they migrate their schema themselves when an
agent opens them.";

/// `idem migrate`.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {}

/// `idem migrate`: moves the keys, and says what it moved.
pub(crate) async fn migrate(
    url: Option<&str>,
    _: &MigrateArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let url = url.map(str::trim).unwrap_or_default();
    if url.is_empty() {
        return Err(Failure::usage(
            "no store given: pass --store URL or set IDEM_STORE (redis://host:port/db)",
        ));
    }
    let shown = redact(url);
    let moved = store::migrate_layout(url)
        .await
        .map_err(|error| Failure::refused(format!("cannot migrate {shown}: {error}")))?;
    match moved {
        None => writeln!(
            out,
            "{shown}: nothing to migrate (only Redis stores have a key layout; SQLite and \
             PostgreSQL migrate their schema when an agent opens them)"
        )?,
        Some(moved) if moved.from_layout == 3 => {
            writeln!(out, "{shown} is in the current layout (3): nothing moved")?;
        }
        Some(moved) if moved.from_layout == 2 => {
            writeln!(
                out,
                "{shown}: marked as layout 3 (layout 2's keys are layout 3's): nothing moved"
            )?;
        }
        Some(moved) => writeln!(
            out,
            "{shown}: moved from layout {} to 3: {} records, {} saga logs, {} running sagas \
             indexed",
            moved.from_layout, moved.records, moved.saga_logs, moved.running_sagas
        )?,
    }
    Ok(())
}
