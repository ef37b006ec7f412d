//! Running Python scripts that check idem against implementations nobody here wrote.
//!
//! The interpreter is `$IDEM_PYTHON`, else `python3`. Under `CI=true` a missing interpreter
//! or package is a failure, so the cross-checks cannot silently stop running there.

use std::path::PathBuf;
use std::process::Command;

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Fails under CI, where the full check must run.
pub(crate) fn required_under_ci(reason: &str) {
    assert!(
        !under_ci(),
        "{reason}: CI must install Python 3 and the rfc8785 package (pip install rfc8785), \
         or point IDEM_PYTHON at an interpreter that has it"
    );
}

/// The interpreter the cross-checks run: `$IDEM_PYTHON`, else `python3`.
pub(crate) fn interpreter() -> String {
    std::env::var("IDEM_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// A file removed when the test ends, however it ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `script` with the path of a file holding `input` (JSON) as its argument; returns the
/// interpreter's name and what it printed, or `None` (after saying why) when there is no
/// interpreter outside CI.
pub(crate) fn run_python(script: &str, input: &impl serde::Serialize) -> Option<(String, String)> {
    let python = interpreter();
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let file = TempFile(
        std::env::temp_dir().join(format!("idem-python-{}-{unique}.json", std::process::id())),
    );
    let json: Vec<u8> = serde_json::to_vec(input).expect("the input is plain JSON");
    std::fs::write(&file.0, json).expect("cannot write to the temp directory");
    let output = match Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&file.0)
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            let reason = format!("cannot run {python}: {error}");
            required_under_ci(&reason);
            eprintln!("skipping the Python cross-check: {reason}");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "{python} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("Python printed invalid UTF-8");
    Some((python, stdout))
}
