//! The day's work: 24 customer tasks, and what goes wrong with which of them.

use std::collections::HashMap;

use crate::fleet::Delivery;
use crate::tools::{Deal, Job, Order, Quote, Task};
use crate::world::Misbehaviour;

const CUSTOMERS: [&str; 8] = [
    "ada", "grace", "alan", "edsger", "barbara", "donald", "frances", "ken",
];

/// How many tasks the queue holds.
pub const TASKS: u32 = 24;

/// The tasks, in queue order, with the world's misbehaviour for each.
#[derive(Debug)]
pub struct Plan {
    /// Every task once.
    pub tasks: Vec<Task>,
    /// What the world does to each task (by reference).
    pub misbehaviour: HashMap<String, Misbehaviour>,
}

impl Plan {
    /// The plan of the run `run` (a prefix of every reference, so that runs on the same
    /// store never share keys).
    pub fn new(run: &str) -> Self {
        let tasks: Vec<Task> = (1..=TASKS).map(|number| task(run, number)).collect();
        let misbehaviour = tasks
            .iter()
            .map(|task| (task.job.reference().to_owned(), misbehaviour(task.number)))
            .collect();
        Plan {
            tasks,
            misbehaviour,
        }
    }

    /// What the queue delivers: each task, to one agent or to two at once.
    pub fn queue(&self) -> Vec<(Task, Delivery)> {
        self.tasks
            .iter()
            .map(|task| {
                let delivery = if self.planned(task).assigned_twice {
                    Delivery::Twice
                } else {
                    Delivery::Once
                };
                (task.clone(), delivery)
            })
            .collect()
    }

    /// What the world does to `task`.
    pub fn planned(&self, task: &Task) -> Misbehaviour {
        self.misbehaviour
            .get(task.job.reference())
            .copied()
            .unwrap_or_default()
    }

    /// The side effects the tasks ask for, each once: what a correct fleet leaves behind.
    pub fn intended(&self) -> Intended {
        let mut intended = Intended::default();
        for task in &self.tasks {
            match &task.job {
                Job::QuoteEmail(_) => intended.emails += 1,
                Job::Payment(_) => intended.charges += 1,
                Job::Deal(_) if self.planned(task).card_declined => {}
                Job::Deal(_) => {
                    intended.contracts += 1;
                    intended.charges += 1;
                    intended.emails += 1;
                }
            }
        }
        intended
    }
}

/// The side effects a run should leave: one per unique intended action.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Intended {
    pub emails: usize,
    pub charges: usize,
    pub contracts: usize,
}

/// Task `number`: a quote email, a payment and a deal, in turn.
fn task(run: &str, number: u32) -> Task {
    let customer = CUSTOMERS[(number as usize - 1) % CUSTOMERS.len()].to_owned();
    let cents = 10_000 + u64::from(number) * 1_250;
    let job = match number % 3 {
        1 => Job::QuoteEmail(Quote {
            reference: format!("Q-{run}-{number:02}"),
            total_cents: cents,
        }),
        2 => Job::Payment(Order {
            reference: format!("O-{run}-{number:02}"),
            amount_cents: cents,
        }),
        _ => Job::Deal(Deal {
            reference: format!("D-{run}-{number:02}"),
            product: "idem enterprise, 5 seats".to_owned(),
            amount_cents: cents,
        }),
    };
    Task {
        number,
        customer,
        job,
    }
}

/// What goes wrong with task `number`: each kind of trouble hits an email, a payment and a
/// deal where it applies.
fn misbehaviour(number: u32) -> Misbehaviour {
    Misbehaviour {
        slow_first_answer: matches!(number, 4 | 8 | 9),
        assigned_twice: matches!(number, 7 | 11 | 12),
        killed_after_charge: matches!(number, 14 | 21),
        card_declined: number == 18,
    }
}
