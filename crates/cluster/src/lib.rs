//! perpcore-cluster: several engine nodes on one NATS JetStream stream, identical to the
//! bit (docs/CLUSTER.md).
//!
//! Owns: the batch message and its idempotency id (`wire`), the node's deterministic
//! rules from stream message to envelope — de-duplication and timestamps (`admission`),
//! the node's cursor (`cursor`), applying the stream to the engine and the node's own
//! journal (`applier`), the NATS side of a node (`node`), producers that publish batches
//! and acknowledge them by the rule (`producer`), the stream's configuration (`stream`),
//! and a local NATS cluster for tests, benchmarks and demos (`harness`).
//! Must never: let anything reach the engine but the stream's messages (their bytes,
//! stream sequence and stored timestamp); the clock and tokio serve timeouts and
//! scheduling only. Single-node mode (`perpcore run`: crossbeam queue + sled) stays the
//! default and does not depend on this crate.

pub mod admission;
pub mod applier;
pub mod cursor;
pub mod harness;
pub mod node;
pub mod producer;
pub mod stream;
pub mod wire;

pub use applier::{Applied, Applier, ApplierOptions, ApplyError, LogMsg};
pub use node::{run_node, NodeError, NodeOptions, NodeOutput, NodeSummary};
pub use producer::{Acked, EncodedBatch, Producer, ProducerConfig, PublishFailed};
pub use stream::StreamNames;
pub use wire::{Checkpoint, ProducerId, Progress};
