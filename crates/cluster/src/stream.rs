//! The JetStream stream the cluster shares: its name, subjects and configuration.
//!
//! Owns: subject naming (`perpcore.<STREAM>.cmd` for commands,
//! `perpcore.<STREAM>.progress.<node>` for progress reports), the stream's configuration
//! (file storage, R replicas, limits retention with no limits, the duplicate window) and
//! creating or checking it. Must never: change an existing stream's configuration.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// How long JetStream remembers a `Nats-Msg-Id` (its duplicate window). A producer's
/// retry budget must stay well inside it (`ProducerConfig::retry_budget` is checked).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Names of a cluster's stream and subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamNames {
    /// The JetStream stream.
    pub stream: String,
    /// Where producers publish batches.
    pub commands: String,
    /// Prefix of the progress subjects (`<prefix>.<node id>`).
    pub progress_prefix: String,
}

/// A name that is not a valid stream name or subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {name:?}: use 1–64 characters of A–Z, a–z, 0–9, '-' and '_'")]
pub struct BadName {
    pub what: &'static str,
    pub name: String,
}

/// Checks a stream name or node id: it becomes a subject token and a consumer name.
pub fn check_name(what: &'static str, name: &str) -> Result<(), BadName> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(BadName {
            what,
            name: name.to_string(),
        })
    }
}

impl StreamNames {
    /// The names for stream `stream`.
    pub fn new(stream: &str) -> Result<Self, BadName> {
        check_name("stream name", stream)?;
        Ok(Self {
            stream: stream.to_string(),
            commands: format!("perpcore.{stream}.cmd"),
            progress_prefix: format!("perpcore.{stream}.progress"),
        })
    }

    /// The subject node `node` reports its progress on.
    pub fn progress(&self, node: &str) -> String {
        format!("{}.{node}", self.progress_prefix)
    }

    /// The durable consumer name of node `node`.
    pub fn consumer(&self, node: &str) -> String {
        format!("node-{node}")
    }

    /// The stream's configuration with `replicas` replicas.
    pub fn config(&self, replicas: usize) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.commands.clone()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: DUPLICATE_WINDOW,
            discard: stream::DiscardPolicy::Old,
            // No limits on messages, bytes or age: a node that restarts re-reads from
            // its cursor, and a new node from the first message (docs/CLUSTER.md).
            ..Default::default()
        }
    }
}

/// Why the stream could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("JetStream: {0}")]
    Nats(String),
    #[error("stream {stream} exists with {found} replicas, {expected} were asked for")]
    Replicas {
        stream: String,
        found: usize,
        expected: usize,
    },
    #[error("stream {stream} exists but does not take subject {subject}")]
    Subject { stream: String, subject: String },
}

/// Creates the stream if it does not exist, or checks that the existing one has the
/// asked replicas and the command subject. Idempotent: every node and producer calls it.
pub async fn ensure_stream(
    js: &jetstream::Context,
    names: &StreamNames,
    replicas: usize,
) -> Result<stream::Stream, EnsureError> {
    let s = js
        .get_or_create_stream(names.config(replicas))
        .await
        .map_err(|e| EnsureError::Nats(e.to_string()))?;
    let cfg = &s.cached_info().config;
    if cfg.num_replicas != replicas {
        return Err(EnsureError::Replicas {
            stream: names.stream.clone(),
            found: cfg.num_replicas,
            expected: replicas,
        });
    }
    if !cfg.subjects.contains(&names.commands) {
        return Err(EnsureError::Subject {
            stream: names.stream.clone(),
            subject: names.commands.clone(),
        });
    }
    Ok(s)
}

/// Parses `--cluster`: comma-separated NATS URLs.
pub fn parse_servers(list: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("{s}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| {
            if v.is_empty() {
                Err("no NATS server given".to_string())
            } else {
                Ok(v)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_checks() {
        let n = StreamNames::new("PERPCORE").unwrap();
        assert_eq!(n.commands, "perpcore.PERPCORE.cmd");
        assert_eq!(n.progress("n1"), "perpcore.PERPCORE.progress.n1");
        assert_eq!(n.consumer("n1"), "node-n1");
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(check_name("node id", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("node id", "node_1-A").is_ok());
    }

    #[test]
    fn server_lists() {
        assert_eq!(
            parse_servers("nats://127.0.0.1:4222, nats://127.0.0.1:4223")
                .unwrap()
                .len(),
            2
        );
        assert!(parse_servers(" , ").is_err());
    }
}
