//! The table: one line per row (system × call), with median and min calls/s at each number
//! of callers, the overhead over the plain call (memory rows), the dedup check, and a note.

use std::fmt::Write;

use crate::results::{Cell, Results};
use crate::rows::{Family, Row, System};

/// `1234567.8` → `1,234,568`.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "—".into();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn rates(cell: Option<&Cell>) -> String {
    match cell {
        None => "—".into(),
        Some(cell) if cell.rounds == 0 => "error".into(),
        Some(cell) if cell.rounds == 1 => thousands(cell.median),
        Some(cell) => format!("{} ({})", thousands(cell.median), thousands(cell.min)),
    }
}

fn dedup(row: Row, cells: &[Option<Cell>]) -> String {
    if !row.system.dedups() {
        return "— (no dedup)".into();
    }
    let measured: Vec<&Cell> = cells.iter().flatten().filter(|c| c.rounds > 0).collect();
    if measured.is_empty() {
        return "—".into();
    }
    let executions: u64 = measured.iter().map(|c| c.executions).sum();
    let expected: u64 = measured.iter().map(|c| c.expected).sum();
    if executions == expected {
        "dedup ok".into()
    } else {
        format!("dedup FAILED ({executions} executions, {expected} expected)")
    }
}

fn short(text: &str, limit: usize) -> String {
    let text = text.replace(['\n', '|'], " ");
    if text.chars().count() <= limit {
        text
    } else {
        format!("{}…", text.chars().take(limit).collect::<String>())
    }
}

/// The table, as Markdown.
pub fn render(results: &Results) -> String {
    let callers = &results.callers;
    let mut out = String::new();
    let heads: Vec<String> = callers
        .iter()
        .map(|&c| {
            format!(
                "{c} caller{}: median (min) calls/s",
                if c == 1 { "" } else { "s" }
            )
        })
        .collect();
    let labels: Vec<String> = callers.iter().map(|c| c.to_string()).collect();
    let _ = writeln!(
        out,
        "| store | system | call | {} | µs/call over plain ({}) | dedup | note |",
        heads.join(" | "),
        labels.join(" / ")
    );
    let _ = writeln!(
        out,
        "|---|---|---|{}---:|---|---|",
        "---:|".repeat(callers.len())
    );
    for &row in &results.rows {
        let family = row.system.family();
        let call = if row.system == System::Plain {
            "any"
        } else {
            row.mode.name()
        };
        if let Some(why) = results.skipped.get(&row) {
            let _ = writeln!(
                out,
                "| {} | {} | {call} | {} | — | — | skipped: {} |",
                family.name(),
                row.system.label(),
                vec!["—"; callers.len()].join(" | "),
                short(why, 80)
            );
            continue;
        }
        let cells: Vec<Option<Cell>> = callers.iter().map(|&c| results.cell(row, c)).collect();
        let overhead = if family == Family::Memory && row.system != System::Plain {
            callers
                .iter()
                .map(|&c| {
                    results
                        .overhead_us(row.system, row.mode, c)
                        .map_or("—".into(), |us| format!("{us:+.2}"))
                })
                .collect::<Vec<_>>()
                .join(" / ")
        } else {
            "—".into()
        };
        let mut note = row.system.note(row.mode).to_owned();
        if let Some(failure) = cells.iter().flatten().find_map(|c| c.failure.clone()) {
            note = format!("FAILED: {}", short(&failure, 100));
        } else if let Some(extra) = cells.iter().flatten().find_map(|c| c.extra.clone()) {
            note = if note.is_empty() {
                extra
            } else {
                format!("{note}; {extra}")
            };
        }
        let _ = writeln!(
            out,
            "| {} | {} | {call} | {} | {overhead} | {} | {note} |",
            family.name(),
            row.system.label(),
            cells
                .iter()
                .map(|c| rates(c.as_ref()))
                .collect::<Vec<_>>()
                .join(" | "),
            dedup(row, &cells),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(thousands(-1234.0), "-1,234");
    }
}
