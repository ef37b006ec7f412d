//! The command line: `[--reps N] [--callers 1,16,64] [--secs S] [--out DIR] [--only LIST]`.

use std::path::PathBuf;

use crate::rows::Family;

pub const USAGE: &str = "\
usage: cargo run --release --manifest-path benches/peers/Cargo.toml -- [options]

Compares idem with its peers (cached, idempotent, agent-effects) and with the raw store
commands, on the memory, SQLite, Redis, Redis Cluster and PostgreSQL stores, at several
numbers of concurrent callers; starts its own redis-server, Redis Cluster (3 masters + 3
replicas) and PostgreSQL. Prints one table and one line per target, and writes a chart
(peers.svg).

options:
  --reps N          rounds of every row, interleaved (default 3)
  --callers LIST    concurrent callers, comma-separated (default 1,16,64)
  --secs S          measured seconds per round, after 0.25 s of warm-up (default 1.5)
  --out DIR         where peers.svg goes (default: benches/peers)
  --only LIST       only these stores: memory,sqlite,redis,redis-cluster,postgres,sagas
                    (default all)
  -h, --help        this text";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub reps: usize,
    pub callers: Vec<usize>,
    pub secs: f64,
    pub out: PathBuf,
    pub only: Vec<Family>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reps: 3,
            callers: vec![1, 16, 64],
            secs: 1.5,
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            only: Family::ALL.to_vec(),
        }
    }
}

/// `Ok(None)`: help was asked for. `Err`: what is wrong with the command line.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_owned(), Some(value.into())),
            _ => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            return Ok(None);
        }
        if !matches!(
            name.as_str(),
            "--reps" | "--callers" | "--secs" | "--out" | "--only"
        ) {
            return Err(format!("unknown argument `{arg}`"));
        }
        let value: String = match inline.or_else(|| args.next()) {
            Some(value) => value,
            None => return Err(format!("`{name}` needs a value")),
        };
        match name.as_str() {
            "--reps" => options.reps = number(&name, &value, 1, 1000)?,
            "--callers" => {
                let mut callers = Vec::new();
                for part in value.split(',') {
                    let n = number(&name, part.trim(), 1, 4096)?;
                    if !callers.contains(&n) {
                        callers.push(n);
                    }
                }
                callers.sort_unstable();
                options.callers = callers;
            }
            "--secs" => {
                let secs: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("`--secs` takes a number of seconds, not `{value}`"))?;
                if !(secs.is_finite() && (0.05..=3600.0).contains(&secs)) {
                    return Err(format!(
                        "`--secs` must be between 0.05 and 3600, not `{value}`"
                    ));
                }
                options.secs = secs;
            }
            "--out" => {
                if value.is_empty() {
                    return Err("`--out` needs a folder".into());
                }
                options.out = PathBuf::from(value);
            }
            _ => {
                let mut only = Vec::new();
                for word in value.split(',').map(str::trim) {
                    let family = Family::ALL
                        .into_iter()
                        .find(|f| f.word() == word.to_lowercase())
                        .ok_or_else(|| {
                            format!(
                                "`--only` takes memory, sqlite, redis, redis-cluster, postgres or sagas, not `{word}`"
                            )
                        })?;
                    if !only.contains(&family) {
                        only.push(family);
                    }
                }
                only.sort();
                options.only = only;
            }
        }
    }
    Ok(Some(options))
}

fn number(name: &str, value: &str, low: usize, high: usize) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (low..=high).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{name}` takes whole numbers from {low} to {high}, not `{value}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse(args("")).unwrap(), Some(Options::default()));
        let options = parse(args(
            "--reps 2 --callers 64,1 --secs=0.5 --only redis,memory",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(options.reps, 2);
        assert_eq!(options.callers, vec![1, 64]);
        assert_eq!(options.secs, 0.5);
        assert_eq!(options.only, vec![Family::Memory, Family::Redis]);
        let options = parse(args("--only redis-cluster,redis")).unwrap().unwrap();
        assert_eq!(options.only, vec![Family::Redis, Family::RedisCluster]);
        assert_eq!(parse(args("--help")).unwrap(), None);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            "--reps",
            "--reps 0",
            "--reps x",
            "--callers 1,,2",
            "--callers -1",
            "--secs nan",
            "--secs 0",
            "--only disk",
            "--frobnicate",
            "extra",
        ] {
            assert!(parse(args(bad)).is_err(), "{bad}");
        }
    }
}
