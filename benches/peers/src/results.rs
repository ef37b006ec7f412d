//! What the rounds gave, by row and number of callers, and the figures the table, the
//! targets and the chart read from them (median and min calls/s over the reps).

use std::collections::BTreeMap;

use crate::rows::{Mode, RoundResult, Row, System};

/// Every round of the run.
#[derive(Default)]
pub struct Results {
    pub rows: Vec<Row>,
    pub callers: Vec<usize>,
    rounds: BTreeMap<(Row, usize), Vec<RoundResult>>,
    errors: BTreeMap<(Row, usize), String>,
    /// Rows that could not run at all, and why (a server not installed).
    pub skipped: BTreeMap<Row, String>,
}

/// A row at one number of callers, over its rounds.
#[derive(Debug, Clone)]
pub struct Cell {
    pub median: f64,
    pub min: f64,
    pub rounds: usize,
    /// Body executions and how many there had to be, over all rounds.
    pub executions: u64,
    pub expected: u64,
    /// The first failure of a round, or of a call in one.
    pub failure: Option<String>,
    /// What the median round saw besides its rate (Redis: the server's commands).
    pub extra: Option<String>,
}

impl Results {
    pub fn new(rows: Vec<Row>, callers: Vec<usize>) -> Self {
        Results {
            rows,
            callers,
            ..Results::default()
        }
    }

    pub fn add(&mut self, row: Row, callers: usize, round: Result<RoundResult, String>) {
        match round {
            Ok(result) => self.rounds.entry((row, callers)).or_default().push(result),
            Err(error) => {
                self.errors.entry((row, callers)).or_insert(error);
            }
        }
    }

    pub fn cell(&self, row: Row, callers: usize) -> Option<Cell> {
        let rounds = self.rounds.get(&(row, callers));
        let error = self.errors.get(&(row, callers)).cloned();
        let Some(rounds) = rounds.filter(|r| !r.is_empty()) else {
            return error.map(|failure| Cell {
                median: f64::NAN,
                min: f64::NAN,
                rounds: 0,
                executions: 0,
                expected: 0,
                failure: Some(failure),
                extra: None,
            });
        };
        let mut sorted: Vec<&RoundResult> = rounds.iter().collect();
        sorted.sort_by(|a, b| a.measured.rate.total_cmp(&b.measured.rate));
        let middle = sorted[(sorted.len() - 1) / 2..=sorted.len() / 2].to_vec();
        let median = middle.iter().map(|r| r.measured.rate).sum::<f64>() / middle.len() as f64;
        let failure = error.or_else(|| rounds.iter().find_map(|r| r.measured.failure.clone()));
        Some(Cell {
            median,
            min: sorted[0].measured.rate,
            rounds: rounds.len(),
            executions: rounds.iter().map(|r| r.executions).sum(),
            expected: rounds.iter().map(|r| r.expected).sum(),
            failure,
            extra: middle[0].extra.clone(),
        })
    }

    /// The median calls/s of `system` in `mode` at `callers`, if it was measured without
    /// failing.
    pub fn median(&self, system: System, mode: Mode, callers: usize) -> Option<f64> {
        self.cell(Row { system, mode }, callers)
            .filter(|cell| cell.failure.is_none() && cell.median.is_finite() && cell.median > 0.0)
            .map(|cell| cell.median)
    }

    /// Microseconds a call of `system` costs the process over the plain call, at `callers`:
    /// `1/rate − 1/plain rate` (at 1 caller the added latency; at more, the added time of
    /// the process per call).
    pub fn overhead_us(&self, system: System, mode: Mode, callers: usize) -> Option<f64> {
        let rate = self.median(system, mode, callers)?;
        let plain = self.median(System::Plain, Mode::Fresh, callers)?;
        Some(1e6 / rate - 1e6 / plain)
    }
}
