//! Opening a file: the store's two connections, and the schema created or upgraded.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{BUSY_TIMEOUT, SCHEMA_VERSION};
use crate::store::Opening;
use crate::Error;

/// The schema of [`SCHEMA_VERSION`], as a new file gets it.
pub(super) const SCHEMA: &str = include_str!("schema.sql");

/// The upgrades of older files, by the version each one leads to, oldest first: one for each
/// version after the first, up to [`SCHEMA_VERSION`].
pub(super) const MIGRATIONS: [(i64, &str); 4] = [
    (2, include_str!("migrations/v2.sql")),
    (3, include_str!("migrations/v3.sql")),
    (4, include_str!("migrations/v4.sql")),
    (5, include_str!("migrations/v5.sql")),
];

/// Opens the store's two connections to `path`: creating or upgrading the schema once, or
/// checking that it is this version's.
pub(super) fn open_file(path: &Path, opening: Opening) -> Result<(Connection, Connection), Error> {
    let refused = |why: String| {
        Error::store(
            "sqlite",
            None,
            format!("cannot open {}: {why}", path.display()),
        )
    };
    let failed = |e: rusqlite::Error| refused(e.to_string());
    let writer = match opening {
        Opening::ForAgents => {
            let mut writer = connect(path, OpenFlags::default()).map_err(failed)?;
            if let Some(newer) = while_busy(|| initialize(&mut writer)).map_err(failed)? {
                return Err(refused(newer_schema(newer)));
            }
            writer
        }
        Opening::Existing => {
            match std::fs::metadata(path) {
                Ok(found) if found.is_file() => {}
                Ok(_) => return Err(refused("it is not a file".into())),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::store(
                        "sqlite",
                        None,
                        format!("no SQLite database at {}", path.display()),
                    ))
                }
                // Permission denied, say: not the same as a file that is not there.
                Err(error) => return Err(refused(error.to_string())),
            }
            let writer = connect(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(failed)?;
            let version: i64 =
                while_busy(|| writer.pragma_query_value(None, "user_version", |row| row.get(0)))
                    .map_err(failed)?;
            match version {
                SCHEMA_VERSION => {}
                0 => return Err(refused("it is not an idem store (no idem schema)".into())),
                newer if newer > SCHEMA_VERSION => return Err(refused(newer_schema(newer))),
                older => {
                    return Err(refused(format!(
                        "its schema version {older} was made by an older idem; the first agent \
                         of this version that opens it upgrades it (this idem knows {SCHEMA_VERSION})"
                    )))
                }
            }
            writer
        }
    };
    let reader = connect(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(failed)?;
    Ok((writer, reader))
}

/// Why a file of a newer idem is refused: this version would not know what that one writes.
pub(super) fn newer_schema(version: i64) -> String {
    format!(
        "its schema version {version} was made by a newer idem; this one knows {SCHEMA_VERSION}"
    )
}

pub(super) fn connect(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // FULL makes each commit durable: a lost claim would let a second caller run a side
    // effect that already happened.
    connection.pragma_update(None, "synchronous", "FULL")?;
    Ok(connection)
}

/// WAL mode (readers and the writer work at once) and the schema, upgraded from an older
/// version if need be, in one transaction so that processes opening a file together never see
/// half of it, nor upgrade it twice. The version is read inside that transaction: a file that
/// a newer idem upgraded meanwhile is left alone, `Ok(Some(its version))`, never lowered.
pub(super) fn initialize(connection: &mut Connection) -> rusqlite::Result<Option<i64>> {
    // A file of a newer idem is left as it is, journal mode included (read again below,
    // inside the transaction, for one upgraded meanwhile).
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Some(version));
    }
    connection.pragma_update(None, "journal_mode", "WAL")?;
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = transaction.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Some(version)); // the transaction rolls back: nothing was written
    }
    upgrade(&transaction, version)?;
    transaction.execute_batch(SCHEMA)?;
    transaction.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    transaction.commit()?;
    Ok(None)
}

/// Runs the [`MIGRATIONS`] a file of `version` has not had, oldest first. A new file
/// (version 0) has none to run: [`SCHEMA`] makes it whole.
///
/// ```text
/// version 0 (new)  ─ SCHEMA ───────────────────────────────────────────────▶ 5
/// version 1        ─ v2.sql ─▶ 2 ─ v3.sql ─▶ 3 ─ v4.sql ─▶ 4 ─ v5.sql ─▶ 5 (then SCHEMA:
///                                                                       nothing to do)
/// ```
pub(super) fn upgrade(connection: &Connection, version: i64) -> rusqlite::Result<()> {
    if version == 0 {
        return Ok(());
    }
    for (to, migration) in MIGRATIONS {
        if to > version {
            connection.execute_batch(migration)?;
        }
    }
    Ok(())
}

/// Runs `work` again while another process holds a lock it needs. SQLite's busy handler does
/// not cover every case (switching a new file to WAL, a lock taken while the file is being
/// recovered), and several processes opening one new file at once meet those.
pub(super) fn while_busy<T>(mut work: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match work() {
            Err(rusqlite::Error::SqliteFailure(error, _))
                if matches!(
                    error.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            done => return done,
        }
    }
}
