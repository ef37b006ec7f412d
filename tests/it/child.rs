//! Child processes for the tests that need more than one process (or a process to kill): the
//! test binary starts itself again, running one ignored test that reads what to do from its
//! environment and prints what it reaches, line by line.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

/// A child process and the lines it prints.
pub struct ChildProcess {
    pub child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl ChildProcess {
    /// Runs the ignored test `test` (a full path such as `processes::child`) of this binary
    /// in a new process, with `env` added to its environment.
    pub fn start<K: AsRef<OsStr>, V: AsRef<OsStr>>(test: &str, env: &[(K, V)]) -> Self {
        Self::launch(
            Command::new(std::env::current_exe().expect("the test binary")),
            test,
            env,
        )
    }

    /// As [`start`](Self::start), run under `wrapper wrapper_args…` (such as `faketime -f
    /// -10m`).
    pub fn start_with<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        wrapper: &Path,
        wrapper_args: &[&str],
        test: &str,
        env: &[(K, V)],
    ) -> Self {
        let mut command = Command::new(wrapper);
        command
            .args(wrapper_args)
            .arg(std::env::current_exe().expect("the test binary"));
        Self::launch(command, test, env)
    }

    fn launch<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut command: Command,
        test: &str,
        env: &[(K, V)],
    ) -> Self {
        command
            .args([
                test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .stdout(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start a child process");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        ChildProcess { child, lines }
    }

    /// Reads lines until one holds `word` (the test harness may print before it on the same
    /// line); returns what follows it.
    pub fn expect(&mut self, word: &str) -> String {
        for line in self.lines.by_ref() {
            let line = line.expect("read the child's output");
            if let Some((_, rest)) = line.split_once(word) {
                return rest.trim().to_owned();
            }
        }
        panic!("the child process ended without printing {word}");
    }

    /// SIGKILL: the process dies where it is, with no chance to clean up.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the child");
        let _ = self.child.wait();
    }

    pub fn finish(mut self) {
        let status = self.child.wait().expect("wait for the child");
        assert!(status.success(), "the child process failed: {status}");
    }
}

impl Drop for ChildProcess {
    /// A test that fails part-way leaves no child behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints one line for the parent, at once.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A fresh temporary folder for one test.
pub fn temp_folder(name: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("idem-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).expect("a temporary folder");
    folder
}

/// Appends one line to a ledger file: a side effect, visible to every process.
pub fn append(ledger: &Path, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ledger)
        .expect("open the ledger");
    // One write of the whole line: appends of several processes never interleave.
    file.write_all(format!("{line}\n").as_bytes())
        .expect("write the ledger");
}

pub fn ledger_lines(ledger: &Path) -> Vec<String> {
    std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The child's environment variable `name`.
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}
