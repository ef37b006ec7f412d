//! What the run shows: a progress bar while it runs, a table at the end.

use std::sync::OnceLock;

use indicatif::{ProgressBar, ProgressStyle};

use crate::fleet::Counts;
use crate::plan::{Intended, Plan};
use crate::tools::{Job, Mode};
use crate::world::Ledger;

static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// The progress bar over the queue's tasks, on stderr; hidden when stderr is not a terminal
/// (a pipe, a test), so the story on stdout stays clean.
pub fn progress_bar(tasks: u64) -> &'static ProgressBar {
    BAR.get_or_init(|| {
        let bar = ProgressBar::new(tasks);
        if let Ok(style) = ProgressStyle::with_template("  {bar:40.cyan/blue} {pos}/{len} tasks") {
            bar.set_style(style.progress_chars("█▉ "));
        }
        bar
    })
}

/// Prints a line of the story on stdout, above the progress bar.
pub fn say(line: &str) {
    match BAR.get() {
        Some(bar) => bar.suspend(|| println!("{line}")),
        None => println!("{line}"),
    }
}

/// The plan, before the run.
pub fn print_plan(plan: &Plan) {
    let count = |kind: fn(&Job) -> bool| plan.tasks.iter().filter(|task| kind(&task.job)).count();
    let numbers = |trouble: fn(&crate::world::Misbehaviour) -> bool| {
        let numbers: Vec<String> = plan
            .tasks
            .iter()
            .filter(|task| trouble(&plan.planned(task)))
            .map(|task| task.number.to_string())
            .collect();
        numbers.join(", ")
    };
    println!(
        "{} customer tasks: {} quote emails, {} payments, {} deals (contract → charge → welcome email).",
        plan.tasks.len(),
        count(|job| matches!(job, Job::QuoteEmail(_))),
        count(|job| matches!(job, Job::Payment(_))),
        count(|job| matches!(job, Job::Deal(_))),
    );
    println!("The world misbehaves:");
    println!(
        "  answers that come after the agent gave up (the effect is made): tasks {}",
        numbers(|m| m.slow_first_answer)
    );
    println!(
        "  tasks the queue delivers twice: {}",
        numbers(|m| m.assigned_twice)
    );
    println!(
        "  agents killed right after a charge, then restarted: tasks {}",
        numbers(|m| m.killed_after_charge)
    );
    println!(
        "  a card declined in the middle of a deal: task {}",
        numbers(|m| m.card_declined)
    );
}

/// Whether what happened is what was intended.
pub fn side_effects_match(intended: Intended, ledger: Ledger) -> bool {
    (intended.emails, intended.charges, intended.contracts)
        == (ledger.emails, ledger.charges, ledger.contracts)
}

/// The table at the end, and the summary line.
pub fn print_table(mode: Mode, counts: &Counts, intended: Intended, ledger: Ledger) {
    let get = Counts::get;
    let attempted = get(&counts.attempted);
    let ended = get(&counts.executed) + get(&counts.from_record) + get(&counts.refused);
    let label = match mode {
        Mode::Idem => "with idem",
        Mode::Unprotected => "without idem",
    };
    println!();
    println!("  {:<34} {label}", "");
    println!("  {:<34} {attempted:>5}", "tool calls attempted");
    println!("  {:<34} {:>5}", "  bodies executed", get(&counts.executed));
    println!(
        "  {:<34} {:>5}",
        "  duplicates prevented",
        get(&counts.from_record)
    );
    println!("  {:<34} {:>5}", "  refused by idem", get(&counts.refused));
    println!(
        "  {:<34} {:>5}",
        "  cut short by a kill",
        attempted.saturating_sub(ended)
    );
    println!(
        "  {:<34} {:>5}",
        "attempts that timed out",
        get(&counts.timeouts)
    );
    println!(
        "  {:<34} {:>5}",
        "tasks delivered twice",
        get(&counts.assigned_twice)
    );
    println!(
        "  {:<34} {:>5}",
        "agents killed and restarted",
        get(&counts.killed)
    );
    println!(
        "  {:<34} {:>5}",
        "sagas compensated", ledger.contracts_deleted
    );
    println!();
    println!(
        "  {:<12} {:>8} {:>8}",
        "side effect", "intended", "happened"
    );
    for (what, want, got) in [
        ("emails", intended.emails, ledger.emails),
        ("charges", intended.charges, ledger.charges),
        ("contracts", intended.contracts, ledger.contracts),
    ] {
        let mark = if want == got { "✓" } else { "✗" };
        println!("  {what:<12} {want:>8} {got:>8}  {mark}");
    }
    println!();
    let matches = if side_effects_match(intended, ledger) {
        "yes"
    } else {
        "no"
    };
    println!(
        "summary: {label}, side effects == unique intended actions: {matches} \
         (emails {}/{}, charges {}/{}, contracts {}/{}); duplicates prevented {}, sagas compensated {}",
        ledger.emails,
        intended.emails,
        ledger.charges,
        intended.charges,
        ledger.contracts,
        intended.contracts,
        get(&counts.from_record),
        ledger.contracts_deleted,
    );
}
