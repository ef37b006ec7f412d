//! What the MCP tests share, in the facade's tests and the `idem` command's: the Python that
//! drives them (the official MCP SDK, `mcp` from PyPI: `$IDEM_PYTHON`, else `python3`), and
//! a directory of their own.

use std::path::PathBuf;
use std::process::Command;

/// A Python that has the MCP SDK; `None` (after saying why on stderr) when there is none,
/// and a failed test under `CI=true`, where CI must have installed it.
pub(crate) fn python_with_mcp(test: &str) -> Option<String> {
    let python = std::env::var("IDEM_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let why = match Command::new(&python).args(["-c", "import mcp"]).output() {
        Ok(output) if output.status.success() => return Some(python),
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr
                .lines()
                .last()
                .unwrap_or("no reason given")
                .to_owned();
            format!("{python} cannot import the MCP SDK: {last}")
        }
        Err(error) => format!("cannot run {python}: {error}"),
    };
    assert!(
        std::env::var("CI").map_or(true, |ci| ci != "true"),
        "{why}: CI must install the MCP Python SDK (pip install mcp) into the interpreter \
         IDEM_PYTHON points at"
    );
    eprintln!(
        "skipping {test}: {why}; `pip install mcp`, or point IDEM_PYTHON at an interpreter \
         that has it"
    );
    None
}

/// A directory removed when the test ends, however it ends.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let nth = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "idem-mcp-test-{}-{unique}-{nth}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("cannot create a directory in the temp dir");
        TempDir(path)
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
