//! `licensing-collector`: the sidecar that picks up usage events where workloads emit them (a
//! followed JSON-lines file, standard input, a local gRPC endpoint), keeps them in a durable
//! local spool, and streams them to `licensing`'s `Ingest`.
//!
//! Nothing acknowledged to a source is lost: a file's lines are spooled together with the file's
//! checkpoint in one transaction, a pushed batch is answered after the spool is flushed, and an
//! event leaves the spool only once `licensing` acknowledged it (which it does once durable).
//! Events may be sent twice after a crash or a reconnect; the service counts each once.

pub mod backoff;
pub mod config;
pub mod line;
pub mod local;
pub mod metrics;
pub mod spool;
pub mod tail;
pub mod upload;
