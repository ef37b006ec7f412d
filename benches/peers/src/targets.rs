//! The targets, one line each, from the medians of this run only (ratios within the run):
//! `target <what>: met (<ratios>)`, `target <what>: MISSED (<ratios>)`, or
//! `target <what>: not measured (<why>)`; and ratios shown with no bound to meet,
//! `info <what>: <ratios>`.

use crate::results::Results;
use crate::rows::sagas::LONG_SAGA_REPEATS;
use crate::rows::{Mode, System};

/// A ratio at one number of callers, and whether it meets its bound.
struct Check {
    callers: usize,
    ratio: f64,
    met: bool,
}

/// `target <what>: …` from the checks at the callers wanted; `not measured` when one of them
/// has no figure.
fn line(what: &str, wanted: &[usize], checks: impl Fn(usize) -> Option<Check>) -> String {
    let mut found = Vec::new();
    for &callers in wanted {
        match checks(callers) {
            Some(check) => found.push(check),
            None => {
                return format!(
                    "target {what}: not measured (no figure at {callers} caller{}: not run, skipped or failed)",
                    if callers == 1 { "" } else { "s" }
                )
            }
        }
    }
    if found.is_empty() {
        return format!("target {what}: not measured (none of its callers were run)");
    }
    let ratios: Vec<String> = found
        .iter()
        .map(|c| format!("x{} {:.2}", c.callers, c.ratio))
        .collect();
    let verdict = if found.iter().all(|c| c.met) {
        "met"
    } else {
        "MISSED"
    };
    format!("target {what}: {verdict} ({})", ratios.join(", "))
}

/// `info <what>: x1 0.93, x16 0.81` at every number of callers run (`—` where either row
/// has no figure): a ratio of two medians with no bound to meet.
fn info(results: &Results, what: &str, a: (System, Mode), b: (System, Mode)) -> String {
    let ratios: Vec<String> = results
        .callers
        .iter()
        .map(
            |&c| match (results.median(a.0, a.1, c), results.median(b.0, b.1, c)) {
                (Some(a), Some(b)) => format!("x{c} {:.2}", a / b),
                _ => format!("x{c} —"),
            },
        )
        .collect();
    format!("info {what}: {}", ratios.join(", "))
}

/// `a / b` of two medians, checked against `at_least`.
fn at_least(
    results: &Results,
    a: (System, Mode),
    b: (System, Mode),
    callers: usize,
    bound: f64,
) -> Option<Check> {
    let ratio = results.median(a.0, a.1, callers)? / results.median(b.0, b.1, callers)?;
    Some(Check {
        callers,
        ratio,
        met: ratio >= bound,
    })
}

/// The targets of this run.
pub fn lines(results: &Results) -> Vec<String> {
    let all = [1, 16, 64];
    let mut out = Vec::new();

    for mode in [Mode::Fresh, Mode::Replay] {
        // idem's overhead over the plain call against cached's: ≤ 1 is met.
        out.push(line(
            &format!(
                "memory overhead {} ≤ cached (idem's µs over plain / cached's)",
                mode.name()
            ),
            &results.callers,
            |c| {
                let idem = results.overhead_us(System::IdemMemory, mode, c)?;
                let cached = results.overhead_us(System::Cached, mode, c)?;
                Some(Check {
                    callers: c,
                    ratio: idem / cached,
                    met: idem <= cached,
                })
            },
        ));
    }

    out.push(line("Redis fresh idem ≥ 1.1× idempotent", &all, |c| {
        at_least(
            results,
            (System::IdemRedis, Mode::Fresh),
            (System::IdempotentRedis, Mode::Fresh),
            c,
            1.1,
        )
    }));
    out.push(line("Redis replay idem ≥ 1.25× idempotent", &all, |c| {
        at_least(
            results,
            (System::IdemRedis, Mode::Replay),
            (System::IdempotentRedis, Mode::Replay),
            c,
            1.25,
        )
    }));
    out.push(line(
        "Redis replay idem ≥ 0.85× raw GET at 1 caller, ≥ 0.70× at 16 and 64",
        &all,
        |c| {
            at_least(
                results,
                (System::IdemRedis, Mode::Replay),
                (System::RawRedis, Mode::Replay),
                c,
                if c == 1 { 0.85 } else { 0.70 },
            )
        },
    ));
    for mode in [Mode::Fresh, Mode::Replay] {
        out.push(info(
            results,
            &format!(
                "Redis Cluster {} idem / raw commands on the cluster",
                mode.name()
            ),
            (System::IdemRedisCluster, mode),
            (System::RawRedisCluster, mode),
        ));
    }
    out.push(line(
        "PostgreSQL replay idem ≥ 0.85× raw SELECT",
        &all,
        |c| {
            at_least(
                results,
                (System::IdemPostgres, Mode::Replay),
                (System::RawPostgres, Mode::Replay),
                c,
                0.85,
            )
        },
    ));
    out.push(line(
        "PostgreSQL fresh idem ≥ 0.70× raw writes",
        &all,
        |c| {
            at_least(
                results,
                (System::IdemPostgres, Mode::Fresh),
                (System::RawPostgres, Mode::Fresh),
                c,
                0.70,
            )
        },
    ));
    for mode in [Mode::Fresh, Mode::Replay] {
        out.push(line(
            &format!(
                "SQLite {} idem ahead of agent-effects at 1 and 16 callers (idem / agent-effects)",
                mode.name()
            ),
            &[1, 16],
            |c| {
                let check = at_least(
                    results,
                    (System::IdemSqlite, mode),
                    (System::AgentEffectsSqlite, mode),
                    c,
                    1.0,
                )?;
                Some(Check {
                    met: check.ratio > 1.0,
                    ..check
                })
            },
        ));
    }
    // Group commit: concurrent callers share the fsync of a claim and of a result.
    out.push(line(
        "SQLite fresh at 16 callers ≥ 3.5× at 1 caller (group commit)",
        &[16],
        |c| {
            let ratio = results.median(System::IdemSqlite, Mode::Fresh, c)?
                / results.median(System::IdemSqlite, Mode::Fresh, 1)?;
            Some(Check {
                callers: c,
                ratio,
                met: ratio >= 3.5,
            })
        },
    ));
    for (store, saga, long, raw) in [
        (
            "SQLite",
            System::SagaSqlite,
            System::LongSagaSqlite,
            System::RawLogSqlite,
        ),
        (
            "Redis",
            System::SagaRedis,
            System::LongSagaRedis,
            System::RawLogRedis,
        ),
        (
            "PostgreSQL",
            System::SagaPostgres,
            System::LongSagaPostgres,
            System::RawLogPostgres,
        ),
    ] {
        // 9 steps cost the 12-step saga's time less the 3-step saga's (the saga's own claim,
        // status and outcome cancel out); the raw log of 3 steps is 6 writes, 2 a step.
        // Times are 1 / (calls/s) at the same concurrency.
        let more = (LONG_SAGA_REPEATS - 1) as f64;
        out.push(line(
            &format!(
                "saga step ≤ its intent + outcome writes, {store} \
                 ((12-step saga − 3-step saga) time / 3 raw logs of 3 steps)"
            ),
            &results.callers,
            |c| {
                let time = |system| Some(1.0 / results.median(system, Mode::Fresh, c)?);
                let ratio = (time(long)? - time(saga)?) / (more * time(raw)?);
                Some(Check {
                    callers: c,
                    ratio,
                    met: ratio <= 1.0,
                })
            },
        ));
    }
    out.push(line(
        "replay cache ≥ 10× raw GET at 1 caller",
        &[1],
        |c| {
            at_least(
                results,
                (System::IdemRedisReplayCache, Mode::Replay),
                (System::RawRedis, Mode::Replay),
                c,
                10.0,
            )
        },
    ));
    out
}
