//! The fleet: agent processes that take tasks from a shared queue, call a tool for each, and
//! retry when no answer comes in time; and the supervisor that restarts a killed agent and
//! puts its unfinished task back on the queue, as an at-least-once queue does.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use indicatif::ProgressBar;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use crate::tools::{self, Mode, Task, ToolError};
use crate::world::{watch_bodies, KillRequest, TOOL_TIMEOUT};

/// How often an agent calls a tool for one task before it gives up on the task.
const ATTEMPTS: u32 = 3;

/// What the fleet counted, from the agents' side.
#[derive(Debug, Default)]
pub struct Counts {
    /// Every call of a tool: first tries, retries after a timeout, duplicates, restarts.
    pub attempted: AtomicUsize,
    /// Calls in which a tool body ran.
    pub executed: AtomicUsize,
    /// Calls answered without running a body: idem's recorded result.
    pub from_record: AtomicUsize,
    /// Calls that ended with an error before any body ran (idem refused them).
    pub refused: AtomicUsize,
    /// Attempts given up on after the timeout (the call itself went on).
    pub timeouts: AtomicUsize,
    /// Tasks the queue handed to a second agent while the first had it.
    pub assigned_twice: AtomicUsize,
    /// Agent processes killed mid-task.
    pub killed: AtomicUsize,
}

impl Counts {
    fn add(counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }
}

/// One agent process: its loop and the tool calls it has in flight, which die with it.
#[derive(Debug)]
struct Process {
    name: String,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Process {
    fn new(name: String) -> Arc<Self> {
        Arc::new(Process {
            name,
            tasks: Mutex::default(),
        })
    }

    /// Runs a tool call as a task of this process: it goes on when the agent stops waiting
    /// for it, and is killed with the process.
    fn spawn<F>(&self, call: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = tokio::spawn(call);
        lock(&self.tasks).push(handle.abort_handle());
        handle
    }

    /// SIGKILL, in effect: every task of the process stops at its next `.await`, with no
    /// clean-up of any kind.
    fn kill(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// How a task came to be on the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered once.
    Once,
    /// Delivered to two agents at once: at-least-once delivery does that, and so does a
    /// second copy of an agent started on the same task.
    Twice,
    /// Put back after the agent working on it was killed.
    AfterKill,
}

/// A task taken from the queue and not finished yet.
#[derive(Debug)]
struct Working {
    task: Task,
    holders: Vec<Arc<Process>>,
}

/// The queue, the agents and what they counted.
#[derive(Debug)]
pub struct Fleet {
    mode: Mode,
    queue: Mutex<VecDeque<(Task, Delivery)>>,
    /// Which processes work on which task (by reference) right now.
    working: Mutex<HashMap<String, Working>>,
    finished: Mutex<HashSet<String>>,
    /// Tasks to hand to a second agent at once (sent by `take`, read by `run`).
    second_deliveries: mpsc::UnboundedSender<Task>,
    second_delivery_requests: Mutex<Option<mpsc::UnboundedReceiver<Task>>>,
    /// What the agents counted.
    pub counts: Counts,
    bar: &'static ProgressBar,
}

impl Fleet {
    /// A fleet that works through `queue` (with its duplicates) in `mode`.
    pub fn new(mode: Mode, queue: Vec<(Task, Delivery)>, unique_tasks: u64) -> Arc<Self> {
        let (second_deliveries, requests) = mpsc::unbounded_channel();
        Arc::new(Fleet {
            second_deliveries,
            second_delivery_requests: Mutex::new(Some(requests)),
            mode,
            queue: Mutex::new(queue.into()),
            working: Mutex::default(),
            finished: Mutex::default(),
            counts: Counts::default(),
            bar: crate::report::progress_bar(unique_tasks),
        })
    }

    fn say(&self, line: &str) {
        crate::report::say(line);
    }

    /// Runs `agents` agent processes until the queue is done, restarting each one that is
    /// killed; kill requests come from the world on `kills`.
    pub async fn run(
        self: &Arc<Self>,
        agents: usize,
        mut kills: mpsc::UnboundedReceiver<KillRequest>,
    ) {
        let mut second_deliveries = lock(&self.second_delivery_requests)
            .take()
            .expect("a fleet runs once");
        let mut processes = JoinSet::new();
        let mut started = 0;
        let mut start = |processes: &mut JoinSet<()>, only: Option<Task>| {
            started += 1;
            let process = Process::new(format!("agent-{started}"));
            let handle = processes.spawn(Arc::clone(self).agent(Arc::clone(&process), only));
            lock(&process.tasks).push(handle);
            process
        };
        for _ in 0..agents {
            start(&mut processes, None);
        }
        loop {
            tokio::select! {
                // Requests first: one sent by a process that then finished must still be
                // served before the set of processes is found empty.
                biased;
                Some(kill) = kills.recv() => {
                    let Some((victim, task)) = self.working_on(&kill.reference) else { continue };
                    victim.kill();
                    Counts::add(&self.counts.killed);
                    self.give_back(&victim, &kill.reference);
                    let new = start(&mut processes, None);
                    self.say(&format!(
                        "  ✝ {} killed right after the charge of task {} ({}); {} starts in its place",
                        victim.name, task.number, task.job.kind(), new.name
                    ));
                }
                Some(task) = second_deliveries.recv() => {
                    let first = self.working_on(task.job.reference()).map(|(first, _)| first.name.clone());
                    let second = start(&mut processes, Some(task.clone()));
                    Counts::add(&self.counts.assigned_twice);
                    self.say(&format!(
                        "  ⧉ task {} ({}) is delivered twice: {} and {} work on it at once",
                        task.number,
                        task.job.kind(),
                        first.as_deref().unwrap_or("another agent"),
                        second.name
                    ));
                }
                joined = processes.join_next() => {
                    if joined.is_none() {
                        break;
                    }
                }
            }
        }
        self.bar.finish_and_clear();
    }

    /// One agent: takes tasks until the queue is empty; or, given `only`, works on that
    /// task alone (a second agent given a task that another has).
    async fn agent(self: Arc<Self>, process: Arc<Process>, only: Option<Task>) {
        let mut abandoned = Vec::new();
        let mut only = only.map(|task| self.hold(&process, task));
        let single = only.is_some();
        while let Some(task) = only
            .take()
            .or_else(|| if single { None } else { self.take(&process) })
        {
            let answer = self.work_on(&process, &task, &mut abandoned).await;
            self.done(&process, &task, answer);
        }
        // The calls it stopped waiting for still run: the process lives until they end.
        for call in abandoned {
            let _ = call.await;
        }
    }

    /// Calls the task's tool, retrying after a timeout.
    async fn work_on(
        self: &Arc<Self>,
        process: &Process,
        task: &Task,
        abandoned: &mut Vec<JoinHandle<()>>,
    ) -> Option<Result<String, ToolError>> {
        for attempt in 1..=ATTEMPTS {
            Counts::add(&self.counts.attempted);
            let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
            let fleet = Arc::clone(self);
            let (mode, call_task) = (self.mode, task.clone());
            let call = process.spawn(async move {
                let (answer, body_ran) = watch_bodies(tools::call(mode, &call_task)).await;
                fleet.count_call(&answer, body_ran);
                let _ = answer_tx.send(answer);
            });
            match tokio::time::timeout(TOOL_TIMEOUT, answer_rx).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(_)) => return None, // the call was killed with its process
                Err(_) => {
                    Counts::add(&self.counts.timeouts);
                    let next = if attempt < ATTEMPTS { "; retrying" } else { "" };
                    self.say(&format!(
                        "  ⏱ {} got no answer for task {} ({}) within {} ms{next}",
                        process.name,
                        task.number,
                        task.job.kind(),
                        TOOL_TIMEOUT.as_millis()
                    ));
                    abandoned.push(call);
                }
            }
        }
        None
    }

    fn count_call(&self, answer: &Result<String, ToolError>, body_ran: bool) {
        let counter = match (body_ran, answer) {
            (true, _) => &self.counts.executed,
            (false, Err(ToolError::Idem(_))) => &self.counts.refused,
            (false, _) => &self.counts.from_record,
        };
        Counts::add(counter);
    }

    /// The next task for `process`, noted as its work.
    fn take(&self, process: &Arc<Process>) -> Option<Task> {
        let (task, delivery) = lock(&self.queue).pop_front()?;
        let task = self.hold(process, task);
        if delivery == Delivery::Twice {
            let _ = self.second_deliveries.send(task.clone());
        }
        Some(task)
    }

    /// Notes `task` as the work of `process`.
    fn hold(&self, process: &Arc<Process>, task: Task) -> Task {
        lock(&self.working)
            .entry(task.job.reference().to_owned())
            .or_insert_with(|| Working {
                task: task.clone(),
                holders: Vec::new(),
            })
            .holders
            .push(Arc::clone(process));
        task
    }

    /// `process` is done with `task`: the queue forgets it.
    fn done(&self, process: &Arc<Process>, task: &Task, answer: Option<Result<String, ToolError>>) {
        let reference = task.job.reference();
        let mut working = lock(&self.working);
        if let Some(entry) = working.get_mut(reference) {
            entry.holders.retain(|holder| !Arc::ptr_eq(holder, process));
            if entry.holders.is_empty() {
                working.remove(reference);
            }
        }
        drop(working);
        match answer {
            Some(Err(ToolError::Declined(why))) => {
                let what = match self.mode {
                    Mode::Idem => "the saga deleted the contract again",
                    Mode::Unprotected => "the contract stays behind",
                };
                self.say(&format!(
                    "  ✗ task {} ({}): {why}; {what}",
                    task.number,
                    task.job.kind()
                ));
            }
            Some(Err(error)) => self.say(&format!(
                "  ! task {} ({}): {error}",
                task.number,
                task.job.kind()
            )),
            Some(Ok(_)) | None => {}
        }
        if lock(&self.finished).insert(reference.to_owned()) {
            self.bar.inc(1);
        }
    }

    /// A process working on `reference`, if any, and the task.
    fn working_on(&self, reference: &str) -> Option<(Arc<Process>, Task)> {
        let working = lock(&self.working);
        let entry = working.get(reference)?;
        Some((entry.holders.first()?.clone(), entry.task.clone()))
    }

    /// Puts a killed process's task back at the front of the queue.
    fn give_back(&self, victim: &Arc<Process>, reference: &str) {
        let mut working = lock(&self.working);
        let Some(entry) = working.get_mut(reference) else {
            return;
        };
        entry.holders.retain(|holder| !Arc::ptr_eq(holder, victim));
        let task = entry.task.clone();
        if entry.holders.is_empty() {
            working.remove(reference);
        }
        drop(working);
        lock(&self.queue).push_front((task, Delivery::AfterKill));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
