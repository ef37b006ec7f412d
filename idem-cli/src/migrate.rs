//! `idem migrate`: moves a Redis store's keys from an older layout of idem's into the one this
//! idem reads.

use std::io::Write;

use clap::Args;
use idem_runtime::store;

use crate::{redact, Failure};

/// The long help of `idem migrate`.
pub(crate) const MIGRATE_HELP: &str = "\
Move the keys of a Redis store from an older layout of idem's into the one this idem reads.

idem 0.x before Redis Cluster support (layout 1) named a record `<prefix>{<key>}:r`; this idem
puts every key in one of 4,096 buckets so that the store runs on Redis Cluster (layout 2), and
refuses to start on a store in layout 1 rather than miss its records. Stop the agents that run
the older idem, run this once, then start the agents of this one. Running it again is harmless:
it moves what is left, and says so when the store is current already.

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
        Some(moved) if moved.from_layout == 2 => {
            writeln!(out, "{shown} is in the current layout (2): nothing moved")?;
        }
        Some(moved) => writeln!(
            out,
            "{shown}: moved from layout {} to 2: {} records, {} saga logs, {} running sagas \
             indexed",
            moved.from_layout, moved.records, moved.saga_logs, moved.running_sagas
        )?,
    }
    Ok(())
}
