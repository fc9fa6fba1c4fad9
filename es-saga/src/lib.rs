//! Process managers (sagas) for `es-core`.
//!
//! This crate will hold the saga runner and the deadline scheduler, written against `es-core`
//! ports only: a saga correlates messages by a key, decides new state, commands, deadlines and
//! completion for each, and the runner commits the state, the commands (as outbox messages)
//! and the inbox record in one transaction. Compensation records completed steps and yields
//! compensating commands in reverse order; late messages reach the saga with its state rather
//! than being dropped.
//!
//! Nothing is exported yet.
