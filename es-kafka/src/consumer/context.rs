//! The consumer's rebalance callbacks: commit what was stored before partitions are revoked,
//! and forget what was held of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::track::{PartitionKey, Tracker};

/// The rdkafka context of a [`KafkaConsumer`](super::KafkaConsumer).
pub(crate) struct GroupContext {
    pub(crate) tracker: Arc<Mutex<Tracker>>,
    /// Set once the member's loop is done with it: a revocation then commits nothing (see
    /// [`GroupContext::close`]).
    pub(crate) closing: AtomicBool,
}

impl GroupContext {
    /// The member is being closed: what its loop handled was committed when the loop ended
    /// (or the loop crashed, and its successors handle the rest again). A revocation served
    /// by the close must not start a commit: librdkafka aborts the process when the group's
    /// leave is answered while a commit is in flight (`rd_kafka_cgrp_terminated: assert:
    /// !rd_kafka_assignment_in_progress`, librdkafka issue 4792), which a close during a
    /// rebalance, with that commit, did here.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }
}

/// Locks the tracker; a panic elsewhere never leaves it half-updated, so poison is ignored.
pub(crate) fn lock(tracker: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(PoisonError::into_inner)
}

fn keys(tpl: &TopicPartitionList) -> Vec<PartitionKey> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// Whether a commit failed only because nothing was stored.
pub(crate) fn nothing_to_commit(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset)
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            // Stored offsets are those of handled messages: commit them while the partitions
            // are still ours, so their next owner does not handle them again; not while the
            // member closes.
            if !self.closing.load(Ordering::Relaxed) {
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) => {}
                    Err(error) if nothing_to_commit(&error) => {}
                    Err(error) => tracing::warn!(%error, "committing before revocation failed"),
                }
            }
            let mut tracker = lock(&self.tracker);
            for key in keys(revoked) {
                tracing::debug!(topic = %key.0, partition = key.1, "partition revoked");
                tracker.revoke(&key);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                let mut tracker = lock(&self.tracker);
                for key in keys(assigned) {
                    tracing::debug!(topic = %key.0, partition = key.1, "partition assigned");
                    tracker.assign(key);
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}
