//! The history checker: reads what the agents saw (history), what happened in the world
//! (ledger), what the driver did (faults) and what the store holds at the end (final), and
//! reports, per invariant, how many times it was broken and the first counterexample.
//!
//! It knows nothing of the store or of the schedule: only the files. `idem-torture check
//! DIR` runs it on the folder of an earlier run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use crate::history::{
    history_files, read_lines, record_name, Action, CallId, Effect, Event, FaultLine, Final,
    LedgerLine, Op, Outcome,
};

/// One invariant's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Its name, as printed.
    pub name: &'static str,
    /// What it holds.
    pub rule: &'static str,
    /// How many times it was broken.
    pub violations: usize,
    /// The first counterexample, in words.
    pub first: Option<String>,
    /// Breaks that the store's documented durability allows (a Redis without AOF restarted):
    /// reported apart, not counted as violations.
    pub allowed_by_durability: usize,
}

impl Verdict {
    fn new(name: &'static str, rule: &'static str) -> Self {
        Verdict {
            name,
            rule,
            violations: 0,
            first: None,
            allowed_by_durability: 0,
        }
    }

    fn broken(&mut self, example: impl FnOnce() -> String, allowed: bool) {
        if allowed {
            self.allowed_by_durability += 1;
            return;
        }
        self.violations += 1;
        if self.first.is_none() {
            self.first = Some(example());
        }
    }
}

/// What a run did and what the checker found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// One verdict per invariant.
    pub verdicts: Vec<Verdict>,
    /// Counts of what happened: calls, outcomes, dispositions, sagas' ends, faults, crashes.
    pub tally: BTreeMap<String, u64>,
}

impl Report {
    /// The violations, over every invariant.
    pub fn violations(&self) -> usize {
        self.verdicts.iter().map(|v| v.violations).sum()
    }

    /// The verdict of the invariant `name`.
    pub fn verdict(&self, name: &str) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.name == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "what happened:")?;
        for (what, count) in &self.tally {
            writeln!(f, "  {what:<40} {count:>8}")?;
        }
        writeln!(f, "invariants:")?;
        for verdict in &self.verdicts {
            let state = if verdict.violations == 0 {
                "ok"
            } else {
                "VIOLATED"
            };
            writeln!(
                f,
                "  {:<34} {:<8} {:>5} violations  ({})",
                verdict.name, state, verdict.violations, verdict.rule
            )?;
            if verdict.allowed_by_durability > 0 {
                writeln!(
                    f,
                    "  {:<34} {:<8} {:>5} apart: lost by the store's documented durability",
                    "", "", verdict.allowed_by_durability
                )?;
            }
            if let Some(first) = &verdict.first {
                writeln!(f, "      first: {first}")?;
            }
        }
        Ok(())
    }
}

/// A call as the history has it: what it was and how it ended (`None`: its process died).
#[derive(Debug, Clone)]
struct Call {
    op: Op,
    end: Option<Outcome>,
}

/// Everything a run wrote, read from its folder.
#[derive(Debug, Clone, Default)]
pub struct Run {
    calls: BTreeMap<CallId, Call>,
    crashes: Vec<(CallId, String)>,
    ledger: Vec<LedgerLine>,
    faults: Vec<FaultLine>,
    end: Final,
}

impl Run {
    /// Reads the files of the run in `folder`.
    pub fn read(folder: &Path) -> Result<Run, String> {
        let mut run = Run::default();
        for path in history_files(folder)? {
            for event in read_lines::<Event>(&path)? {
                run.add(event);
            }
        }
        run.ledger = read_lines(&folder.join("ledger.jsonl"))?;
        run.faults = read_lines(&folder.join("faults.jsonl"))?;
        let end = folder.join("final.json");
        let text = std::fs::read_to_string(&end).map_err(|e| format!("{}: {e}", end.display()))?;
        run.end = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", end.display()))?;
        Ok(run)
    }

    fn add(&mut self, event: Event) {
        match event {
            Event::Start { call, op, .. } => {
                self.calls.insert(call, Call { op, end: None });
            }
            Event::End { call, outcome, .. } => {
                if let Some(known) = self.calls.get_mut(&call) {
                    known.end = Some(outcome);
                }
            }
            Event::Crash { call, point } => self.crashes.push((call, point)),
        }
    }
}

/// An effect in the ledger: what was made, whether the run was resumed, what the service
/// answered, the fencing token it ran under.
type Made<'a> = (&'a Effect, bool, u64, u64);

/// The runs of one key in one era of the ledger, split where their claims were made in
/// different eras of the store. An effect is placed in an era by when it was written; its
/// claim may be older (an owner claimed before a restart that lost the records, and wrote its
/// effect after it). For a store that lost its records (`lost`), a run whose fencing token is
/// smaller than one before it has its claim from a counter that started again: a later era.
/// (In a store that lost nothing, tokens are never reused, and nothing is split.)
fn claimed_in_one_era<'r, 'm>(runs: &'r [&'r Made<'m>], lost: bool) -> Vec<Vec<&'r Made<'m>>> {
    let mut eras: Vec<Vec<&Made<'m>>> = vec![Vec::new()];
    let mut highest = 0;
    for run in runs {
        let token = run.3;
        if lost && token < highest {
            eras.push(Vec::new());
        }
        highest = highest.max(token);
        eras.last_mut().expect("one era at least").push(run);
    }
    eras
}

/// Per era of the store (`None`: during a restart that lost its records), the first value
/// acknowledged, and to which call.
type ByEra = BTreeMap<Option<usize>, (u64, CallId)>;

/// The dispositions whose value the store acknowledged as recorded.
fn acknowledged(disposition: Option<&str>) -> bool {
    matches!(
        disposition,
        Some("executed" | "taken_over" | "replayed" | "waited" | "verified")
    )
}

/// Checks every invariant on `run`.
pub fn check(run: &Run) -> Report {
    let mut report = Report::default();
    tally(run, &mut report.tally);
    // The world's effects, by action and key, each with the era of the store it was made in:
    // how many restarts of a store that loses its records (Redis without persistence) came
    // before it in the ledger, or `None` when it was made while such a restart was under way
    // (before the kill or after the start, nobody can tell). Only one era is the store's
    // own: `eras`, the last.
    let mut effects: BTreeMap<(Action, u32), Vec<Made<'_>>> = BTreeMap::new();
    let mut by_value: BTreeMap<u64, &Effect> = BTreeMap::new();
    let mut era: BTreeMap<u64, Option<usize>> = BTreeMap::new();
    let mut undone: BTreeMap<(Action, u32), BTreeSet<u64>> = BTreeMap::new();
    let mut eras = 0;
    let mut restarting = false;
    for line in &run.ledger {
        match line {
            LedgerLine::StoreLosing { .. } => restarting = true,
            LedgerLine::StoreLost { .. } => {
                eras += 1;
                restarting = false;
            }
            LedgerLine::Effect {
                effect,
                resumed,
                answered,
                token,
                ..
            } => {
                effects
                    .entry((effect.action, effect.key))
                    .or_default()
                    .push((effect, *resumed, *answered, *token));
                by_value.insert(effect.value, effect);
                era.insert(effect.value, (!restarting).then_some(eras));
            }
            LedgerLine::Compensation { undone: effect, .. } => {
                undone
                    .entry((effect.action, effect.key))
                    .or_default()
                    .insert(effect.value);
            }
        }
    }

    let mut once = Verdict::new(
        "at_most_once",
        "a body's effect happens at most once per key, but for runs the history marks resumed; never twice for on_stale = review",
    );
    let too_many = |action: Action, runs: &[&Made<'_>]| {
        let fresh = runs.iter().filter(|(_, resumed, _, _)| !resumed).count();
        let mut tokens: Vec<u64> = runs.iter().map(|(_, _, _, token)| *token).collect();
        tokens.sort_unstable();
        // Two effects under one fencing token: two owners of one claim.
        let shared_token = tokens.windows(2).any(|pair| pair[0] == pair[1]);
        shared_token
            || if action == Action::Wire {
                runs.len() > 1
            } else {
                fresh > 1
            }
    };
    for ((action, key), made) in &effects {
        let all: Vec<&Made<'_>> = made.iter().collect();
        if !too_many(*action, &all) {
            continue;
        }
        // Within one era of the store the rule holds whole; across eras of a store that lost
        // its records (and for effects made during its restart) its docs allow a re-run.
        let mut by_era: BTreeMap<usize, Vec<&Made<'_>>> = BTreeMap::new();
        for run in made {
            if let Some(Some(made_in)) = era.get(&run.0.value) {
                by_era.entry(*made_in).or_default().push(run);
            }
        }
        let within_an_era = by_era
            .values()
            .flat_map(|runs| claimed_in_one_era(runs, eras > 0))
            .any(|runs| too_many(*action, &runs));
        once.broken(
            || {
                format!(
                    "{} ran {} times: (value, resumed, token) {:?}",
                    record_name(*action, *key),
                    made.len(),
                    made.iter()
                        .map(|(e, r, _, t)| (e.value, *r, *t))
                        .collect::<Vec<_>>()
                )
            },
            !within_an_era,
        );
    }

    let mut from_ledger = Verdict::new(
        "values_from_the_ledger",
        "every value a caller got is an effect the ledger has, for that action and key",
    );
    let mut crossed = Verdict::new(
        "no_value_crossed_keys",
        "no caller got the value of another key or action",
    );
    let mut agree = Verdict::new(
        "one_result_per_key",
        "every caller told a result was recorded got the same value for the key",
    );
    // Per action and key, the first value acknowledged in each era (`None`: made during a
    // restart of a store that loses its records).
    let mut acknowledged_values: BTreeMap<(Action, u32), ByEra> = BTreeMap::new();
    for (id, call) in &run.calls {
        let (Op::Tool { action, key }, Some(Outcome::Ok { value, disposition })) =
            (&call.op, &call.end)
        else {
            continue;
        };
        let Some(value) = value else {
            from_ledger.broken(|| format!("{id:?}: a tool answered no value"), false);
            continue;
        };
        if value.action != *action || value.key != *key {
            crossed.broken(
                || {
                    format!(
                        "{id:?} called {} and got {}'s value {}",
                        record_name(*action, *key),
                        record_name(value.action, value.key),
                        value.value
                    )
                },
                false,
            );
        }
        match by_value.get(&value.value) {
            Some(made) if made.action == value.action && made.key == value.key => {}
            Some(made) => crossed.broken(
                || {
                    format!(
                        "{id:?} got value {} of {}, made for {}",
                        value.value,
                        record_name(value.action, value.key),
                        record_name(made.action, made.key)
                    )
                },
                false,
            ),
            None => from_ledger.broken(
                || format!("{id:?} got value {} that no body made", value.value),
                false,
            ),
        }
        if acknowledged(disposition.as_deref()) {
            let made_in = era.get(&value.value).copied().flatten();
            let per_era = acknowledged_values.entry((*action, *key)).or_default();
            let differs = per_era
                .iter()
                .find(|(_, (first, _))| *first != value.value)
                .map(|(first_era, first)| (*first_era, *first));
            if let Some((first_era, (first, first_id))) = differs {
                // Within one era (both known) the results must agree; across eras, or for
                // a value made during a restart, the store's docs allow a new result.
                let allowed = made_in.is_none() || first_era.is_none() || first_era != made_in;
                agree.broken(
                    || {
                        format!(
                            "{}: {first_id:?} got {first}, {id:?} got {} ({})",
                            record_name(*action, *key),
                            value.value,
                            disposition.as_deref().unwrap_or("?")
                        )
                    },
                    allowed,
                );
            }
            per_era.entry(made_in).or_insert((value.value, *id));
        }
    }

    let mut kept = Verdict::new(
        "acknowledged_results_kept",
        "the store still holds every result it acknowledged as recorded",
    );
    for ((action, key), per_era) in &acknowledged_values {
        let name = record_name(*action, *key);
        let held = run.end.records.get(&name).copied().flatten();
        // The store must hold the result acknowledged in its last era; one acknowledged
        // before a loss of its records (or during a restart) may be gone, as its docs say.
        let (made_in, (value, id)) = per_era
            .get_key_value(&Some(eras))
            .or_else(|| per_era.iter().next_back())
            .expect("an entry has a value");
        if held != Some(*value) {
            let before_a_loss = *made_in != Some(eras);
            kept.broken(
                || {
                    format!(
                        "{name}: {id:?} was told {value} was recorded; the store holds {held:?}"
                    )
                },
                before_a_loss,
            );
        }
    }

    let mut ended = Verdict::new(
        "sagas_ended",
        "after recovery every saga is completed, compensated or needs attention",
    );
    let mut net = Verdict::new(
        "compensations_match_effects",
        "every compensation undid an effect that happened, in a saga that was undone",
    );
    let mut forgotten = Verdict::new(
        "no_in_doubt_step_forgotten",
        "a compensated saga undid every step whose effect happened; a completed one has every effect",
    );
    let orders: BTreeSet<u32> = run
        .calls
        .values()
        .filter_map(|call| match call.op {
            Op::Saga { order } => Some(order),
            Op::Tool { .. } => None,
        })
        .collect();
    for order in orders {
        let status = run
            .end
            .sagas
            .get(&order)
            .map_or("none", |saga| saga.status.as_str());
        if !matches!(
            status,
            "completed" | "compensated" | "needs_attention" | "none"
        ) {
            ended.broken(
                || {
                    format!(
                        "order-{order} ended {status}: {:?}",
                        run.end.sagas.get(&order)
                    )
                },
                false,
            );
        }
        for step in [Action::Reserve, Action::ChargeCard, Action::Notify] {
            let answered: BTreeSet<u64> = effects
                .get(&(step, order))
                .map(|made| made.iter().map(|(_, _, answered, _)| *answered).collect())
                .unwrap_or_default();
            let undone_here = undone.get(&(step, order)).cloned().unwrap_or_default();
            // Every effect of the step made in the store's own (last) era: else its log may
            // have been lost with the store's records, and a saga run again over it (the
            // service answering with the first, maybe undone, effect) is what the docs allow.
            let in_this_era = effects.get(&(step, order)).is_none_or(|made| {
                made.iter()
                    .all(|(effect, _, _, _)| era.get(&effect.value) == Some(&Some(eras)))
            });
            if let Some(stray) = undone_here.difference(&answered).next() {
                net.broken(
                    || {
                        format!(
                            "order-{order}: {} undid {stray}, an effect the service never answered",
                            step.name()
                        )
                    },
                    false,
                );
            }
            match status {
                "compensated" => {
                    if let Some(left) = answered.difference(&undone_here).next() {
                        forgotten.broken(
                            || format!("order-{order} ended compensated, but {}'s effect {left} was never undone ({:?})", step.name(), run.end.sagas.get(&order)),
                            !in_this_era,
                        );
                    }
                }
                // No log at all, yet a step's effect happened: the saga was forgotten.
                "none" if !answered.is_empty() => {
                    forgotten.broken(
                        || format!("order-{order} has no saga log, but {}'s effect {answered:?} happened", step.name()),
                        !in_this_era,
                    );
                }
                "completed" if answered.len() != 1 || !undone_here.is_empty() => {
                    forgotten.broken(
                        || format!("order-{order} ended completed with {} effects {answered:?}, undone {undone_here:?}", step.name()),
                        !in_this_era,
                    );
                }
                _ => {}
            }
        }
    }

    let mut clean = Verdict::new(
        "agents_exited_cleanly",
        "no agent process failed other than by the faults injected (a panic is a bug)",
    );
    for fault in run.faults.iter().filter(|f| f.kind == "agent_failed") {
        clean.broken(|| fault.detail.clone(), false);
    }

    report.verdicts = vec![
        once,
        from_ledger,
        crossed,
        agree,
        kept,
        ended,
        net,
        forgotten,
        clean,
    ];
    report
}

fn tally(run: &Run, tally: &mut BTreeMap<String, u64>) {
    let mut add = |what: String| *tally.entry(what).or_default() += 1;
    for call in run.calls.values() {
        let what = match call.op {
            Op::Tool { action, .. } => action.name(),
            Op::Saga { .. } => "order saga",
        };
        add(format!("calls: {what}"));
        add(match &call.end {
            None => "ended: killed before answering".to_owned(),
            Some(Outcome::Ok { disposition, .. }) => {
                format!("ended: ok, {}", disposition.as_deref().unwrap_or("saga"))
            }
            Some(Outcome::Err { kind, .. }) => format!("ended: error {kind}"),
            Some(Outcome::TimedOut) => "ended: timed out by the caller".to_owned(),
        });
    }
    for (_, point) in &run.crashes {
        add(format!("fault: agent SIGKILLed itself {point}"));
    }
    for fault in &run.faults {
        add(format!("fault: {}", fault.kind));
    }
    for line in &run.ledger {
        add(match line {
            LedgerLine::Effect { resumed: true, .. } => "ledger: effects (resumed runs)".into(),
            LedgerLine::Effect { .. } => "ledger: effects".into(),
            LedgerLine::Compensation { .. } => "ledger: compensations".into(),
            LedgerLine::StoreLost { .. } => "ledger: the store lost its records".into(),
            LedgerLine::StoreLosing { .. } => "ledger: the store is restarting".into(),
        });
    }
    for saga in run.end.sagas.values() {
        add(format!("sagas ended: {}", saga.status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Effect;

    fn effect(value: u64, resumed: bool, token: u64) -> LedgerLine {
        LedgerLine::Effect {
            effect: Effect {
                action: Action::SendEmail,
                key: 7,
                value,
            },
            resumed,
            answered: value,
            idem_key: String::new(),
            token,
            agent: 0,
            incarnation: 0,
        }
    }

    fn once(ledger: Vec<LedgerLine>) -> Verdict {
        let run = Run {
            ledger,
            ..Run::default()
        };
        check(&run)
            .verdict("at_most_once")
            .cloned()
            .expect("the verdict")
    }

    #[test]
    fn a_second_fresh_run_is_a_violation() {
        let verdict = once(vec![effect(1, false, 10), effect(2, false, 11)]);
        assert_eq!((verdict.violations, verdict.allowed_by_durability), (1, 0));
        assert!(verdict.first.expect("an example").contains("send_email/7"));
    }

    #[test]
    fn a_resumed_run_is_allowed_but_not_under_the_same_token() {
        let resumed = once(vec![effect(1, false, 10), effect(2, true, 11)]);
        assert_eq!(resumed.violations, 0);
        let shared = once(vec![effect(1, false, 10), effect(2, true, 10)]);
        assert_eq!(shared.violations, 1, "two owners of one claim");
    }

    #[test]
    fn runs_across_a_loss_of_records_are_apart_but_a_double_run_within_an_era_is_not() {
        let lost = |at_ms| LedgerLine::StoreLost { at_ms };
        let across = once(vec![effect(1, false, 10), lost(5), effect(2, false, 1)]);
        assert_eq!((across.violations, across.allowed_by_durability), (0, 1));
        let within = once(vec![
            effect(1, false, 10),
            effect(2, false, 11),
            lost(5),
            effect(3, false, 1),
        ]);
        assert_eq!((within.violations, within.allowed_by_durability), (1, 0));
        // A claim from before the restart whose effect was written after it: its token is
        // the old counter's, larger than the new one's, so the two runs are of two eras.
        let straddling = once(vec![
            effect(1, false, 30852),
            lost(5),
            effect(2, false, 30853),
            effect(3, false, 13),
        ]);
        assert_eq!(
            (straddling.violations, straddling.allowed_by_durability),
            (0, 1)
        );
        // Made while the store restarted: either era, so never held against it.
        let during = once(vec![
            effect(1, false, 10),
            LedgerLine::StoreLosing { at_ms: 4 },
            effect(2, false, 11),
            lost(5),
        ]);
        assert_eq!((during.violations, during.allowed_by_durability), (0, 1));
    }
}
