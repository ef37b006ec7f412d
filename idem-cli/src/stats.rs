//! `idem stats`: how many records of each action are of each status.

use std::collections::BTreeMap;
use std::io::Write;

use clap::Args;
use idem_runtime::store::{RecordCount, RecordKind};
use serde_json::{json, Map, Value};

use crate::table::Table;
use crate::{print_json, Ctx, Failure};

/// `idem stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Print a JSON object instead of a table
    #[arg(long)]
    json: bool,
}

/// Counts per kind, in the order of [`RecordKind::ALL`].
type Counts = [u64; RecordKind::ALL.len()];

/// `idem stats`: one row per action, a column per status, totals.
pub(crate) async fn stats(ctx: &Ctx, args: &StatsArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let counts = ctx
        .store
        .record_counts()
        .await
        .map_err(|error| ctx.failed("count the records", error))?;
    let (actions, total) = by_action(&counts);
    if args.json {
        let actions: Vec<Value> = actions
            .iter()
            .map(|(action, counts)| {
                let mut row = counts_json(counts);
                row.insert("action".into(), json!(action));
                Value::Object(row)
            })
            .collect();
        return print_json(
            out,
            &json!({ "actions": actions, "total": Value::Object(counts_json(&total)) }),
        );
    }
    let mut headers = vec!["action"];
    headers.extend(RecordKind::ALL.iter().map(|kind| kind.as_str()));
    headers.push("total");
    let mut table = Table::new(&headers).right(&(1..headers.len()).collect::<Vec<_>>());
    for (action, counts) in actions.iter().chain([&("total".to_owned(), total)]) {
        let mut row = vec![action.clone()];
        row.extend(counts.iter().map(u64::to_string));
        row.push(counts.iter().sum::<u64>().to_string());
        table.row(row);
    }
    out.write_all(table.render().as_bytes())?;
    Ok(())
}

/// The store's rows gathered per action (sorted by name), and the totals per kind.
fn by_action(counts: &[RecordCount]) -> (Vec<(String, Counts)>, Counts) {
    let mut actions = BTreeMap::<&str, Counts>::new();
    let mut total: Counts = [0; RecordKind::ALL.len()];
    for row in counts {
        let column = RecordKind::ALL
            .iter()
            .position(|kind| *kind == row.kind)
            .unwrap_or(0);
        actions.entry(&row.action).or_default()[column] += row.count;
        total[column] += row.count;
    }
    let actions = actions
        .into_iter()
        .map(|(action, counts)| (action.to_owned(), counts))
        .collect();
    (actions, total)
}

/// `{"in_progress": n, "completed": n, "failed": n, "needs_review": n, "total": n}`.
fn counts_json(counts: &Counts) -> Map<String, Value> {
    let mut object: Map<String, Value> = RecordKind::ALL
        .iter()
        .zip(counts)
        .map(|(kind, count)| (kind.as_str().to_owned(), json!(count)))
        .collect();
    object.insert("total".into(), json!(counts.iter().sum::<u64>()));
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_gathered_per_action() {
        let counts = [
            RecordCount::new("charge".into(), RecordKind::Failed, 2),
            RecordCount::new("charge".into(), RecordKind::Completed, 5),
            RecordCount::new("email".into(), RecordKind::InProgress, 1),
        ];
        let (actions, total) = by_action(&counts);
        assert_eq!(
            actions,
            [
                ("charge".to_owned(), [0, 5, 2, 0]),
                ("email".to_owned(), [1, 0, 0, 0])
            ]
        );
        assert_eq!(total, [1, 5, 2, 0]);
    }
}
