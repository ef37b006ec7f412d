//! The proxy's configuration file (TOML): what it deduplicates, and how.
//!
//! ```toml
//! # The upstream's identity in every key (default: the name the server gives itself and a
//! # digest of its command line or URL). Name it to share results between machines that
//! # start the same server from different paths.
//! server = "mail"
//! # A new version gives every call new keys: the way to retire recorded results on purpose.
//! version = 1
//!
//! # For every deduplicated tool, unless the tool's own table says otherwise.
//! [defaults]
//! ttl = "24h"              # how long a result is replayed
//! lease = "10s"            # how long a call holds its key without a heartbeat
//! on_conflict = "wait 30s" # or "wait(30s)", "fail": what a duplicate does meanwhile
//! on_stale = "takeover"    # or "review": what follows a call whose proxy or server died
//! record_errors = false    # record results with isError: true too
//!
//! [tools.send_email]
//! key = ["/to", "/subject"] # JSON pointers: the key is these, not all arguments
//! on_stale = "review"
//!
//! [tools.search_docs]
//! off = true                # pass through, never recorded
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use idem_runtime::{Action, OnConflict, OnStale};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The upstream's identity in keys; `None`: the `serverInfo.name` it reports with a
    /// digest of how it is reached.
    pub(crate) server: Option<String>,
    /// Part of every key.
    #[serde(default = "first_version")]
    pub(crate) version: u32,
    #[serde(default)]
    defaults: ToolConfig,
    #[serde(default)]
    tools: BTreeMap<String, ToolConfig>,
}

fn first_version() -> u32 {
    1
}

/// One tool's table, or `[defaults]`: every field optional, a tool's own over the defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolConfig {
    off: Option<bool>,
    ttl: Option<String>,
    lease: Option<String>,
    key: Option<Vec<String>>,
    on_conflict: Option<String>,
    on_stale: Option<String>,
    record_errors: Option<bool>,
}

/// What the proxy does with the calls of one tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolPolicy {
    /// Calls pass straight through, recorded nowhere.
    pub(crate) off: bool,
    pub(crate) ttl: Duration,
    pub(crate) lease: Duration,
    /// JSON pointers into the arguments that make the key; `None`: all the arguments.
    pub(crate) key: Option<Vec<String>>,
    pub(crate) on_conflict: OnConflict,
    pub(crate) on_stale: OnStale,
    /// Results with `isError: true` are recorded and replayed too (otherwise they release
    /// the key, so that a retry runs the tool again).
    pub(crate) record_errors: bool,
}

impl Config {
    /// Reads and checks the file at `path`: every duration, pointer and policy is checked
    /// here, so that a mistake stops the proxy at start-up rather than at a call.
    pub(crate) fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        Self::parse(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|error| error.to_string())?;
        if config
            .server
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err("`server` is empty: name the upstream, or leave it out".into());
        }
        config.defaults.policy(&ToolConfig::default(), false)?;
        for (name, tool) in &config.tools {
            tool.policy(&config.defaults, false)
                .map_err(|error| format!("[tools.{name}]: {error}"))?;
        }
        Ok(config)
    }

    /// The policy of tool `name`, which the upstream marks read-only or not: read-only tools
    /// pass through unless their table says `off = false`.
    pub(crate) fn policy(&self, name: &str, read_only: bool) -> ToolPolicy {
        let tool = self.tools.get(name).cloned().unwrap_or_default();
        // Checked at load: a policy that fails here fails for every tool at start-up.
        tool.policy(&self.defaults, read_only)
            .expect("the configuration was checked when it was loaded")
    }

    /// The tools the file names, for the check that they exist upstream.
    pub(crate) fn tool_names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }
}

impl ToolConfig {
    fn policy(&self, defaults: &ToolConfig, read_only: bool) -> Result<ToolPolicy, String> {
        let ttl = duration("ttl", self.ttl.as_ref().or(defaults.ttl.as_ref()))?;
        let lease = duration("lease", self.lease.as_ref().or(defaults.lease.as_ref()))?;
        let key = self.key.clone().or_else(|| defaults.key.clone());
        if let Some(pointers) = &key {
            for pointer in pointers {
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    return Err(format!(
                        "key: `{pointer}` is not a JSON pointer (RFC 6901): write `/{pointer}`"
                    ));
                }
            }
        }
        Ok(ToolPolicy {
            off: self.off.or(defaults.off).unwrap_or(read_only),
            ttl: ttl.unwrap_or(Action::DEFAULT_TTL),
            lease: lease.unwrap_or(Action::DEFAULT_LEASE),
            key,
            on_conflict: on_conflict(self.on_conflict.as_ref().or(defaults.on_conflict.as_ref()))?,
            on_stale: on_stale(self.on_stale.as_ref().or(defaults.on_stale.as_ref()))?,
            record_errors: self
                .record_errors
                .or(defaults.record_errors)
                .unwrap_or(false),
        })
    }
}

fn duration(field: &str, text: Option<&String>) -> Result<Option<Duration>, String> {
    let Some(text) = text else { return Ok(None) };
    let parsed = humantime::parse_duration(text.trim()).map_err(|error| {
        format!("{field}: `{text}` is not a duration like \"10s\" or \"24h\" ({error})")
    })?;
    if parsed.is_zero() {
        return Err(format!("{field}: must be longer than zero"));
    }
    Ok(Some(parsed))
}

fn on_conflict(text: Option<&String>) -> Result<OnConflict, String> {
    let Some(text) = text else {
        return Ok(OnConflict::Wait(Action::DEFAULT_WAIT));
    };
    let text = text.trim();
    if text == "fail" {
        return Ok(OnConflict::Fail);
    }
    if text == "wait" {
        return Ok(OnConflict::Wait(Action::DEFAULT_WAIT));
    }
    // `wait 30s`, or `wait(30s)` as the attribute writes it.
    let limit = text.strip_prefix("wait ").or_else(|| {
        text.strip_prefix("wait(")
            .and_then(|rest| rest.strip_suffix(')'))
    });
    match limit {
        Some(limit) => Ok(OnConflict::Wait(
            duration("on_conflict", Some(&limit.trim().to_owned()))?
                .unwrap_or(Action::DEFAULT_WAIT),
        )),
        None => Err(format!(
            "on_conflict: `{text}` is not \"fail\", \"wait\", \"wait 30s\" or \"wait(30s)\""
        )),
    }
}

fn on_stale(text: Option<&String>) -> Result<OnStale, String> {
    match text.map(|t| t.trim()) {
        None | Some("takeover") => Ok(OnStale::TakeOver),
        Some("review") => Ok(OnStale::Review),
        Some(other) => Err(format!(
            "on_stale: `{other}` is not \"takeover\" or \"review\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tools_table_overrides_the_defaults_and_read_only_tools_pass_through() {
        let config = Config::parse(
            r#"
            server = "mail"
            version = 3
            [defaults]
            ttl = "1h"
            on_conflict = "fail"
            [tools.send_email]
            key = ["/to"]
            on_stale = "review"
            lease = "2s"
            [tools.lookup]
            off = false
            "#,
        )
        .unwrap();
        assert_eq!(
            (config.server.as_deref(), config.version),
            (Some("mail"), 3)
        );
        let email = config.policy("send_email", false);
        assert_eq!(email.ttl, Duration::from_secs(3600));
        assert_eq!(email.lease, Duration::from_secs(2));
        assert_eq!(email.key, Some(vec!["/to".to_owned()]));
        assert_eq!(email.on_conflict, OnConflict::Fail);
        assert_eq!(email.on_stale, OnStale::Review);
        assert!(!email.off && !email.record_errors);
        // Read-only by its annotations, deduplicated because its table says so.
        assert!(!config.policy("lookup", true).off);
        // Read-only and unnamed: passes through.
        assert!(config.policy("search", true).off);
        let other = config.policy("search", false);
        assert_eq!(other.lease, Action::DEFAULT_LEASE);
        assert_eq!(other.on_stale, OnStale::TakeOver);
    }

    #[test]
    fn no_file_means_the_librarys_defaults() {
        let policy = Config::default().policy("send_email", false);
        assert_eq!(policy.ttl, Action::DEFAULT_TTL);
        assert_eq!(policy.on_conflict, OnConflict::Wait(Action::DEFAULT_WAIT));
        assert_eq!(Config::parse("").unwrap().version, 1);
    }

    #[test]
    fn mistakes_are_refused_with_what_and_where() {
        let refused = |text: &str| Config::parse(text).unwrap_err();
        assert!(refused("[tools.a]\nttl = \"soon\"").contains("[tools.a]: ttl: `soon`"));
        assert!(refused("[tools.a]\nkey = [\"to\"]").contains("write `/to`"));
        assert!(refused("[defaults]\non_stale = \"retry\"").contains("on_stale"));
        assert!(refused("[defaults]\non_conflict = \"wait forever\"").contains("on_conflict"));
        assert!(refused("[tools.a]\nlease = \"0s\"").contains("longer than zero"));
        assert!(refused("[tools.a]\nttl_secs = 5").contains("ttl_secs"));
        assert!(refused("server = \" \"").contains("server"));
        for written in ["wait 2s", "wait(2s)"] {
            let text = format!("[defaults]\non_conflict = \"{written}\"");
            assert_eq!(
                Config::parse(&text).unwrap().policy("x", false).on_conflict,
                OnConflict::Wait(Duration::from_secs(2))
            );
        }
    }
}
