//! The consumer's rebalance callbacks: commit what was stored before partitions are revoked,
//! and forget what was held of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;

use super::track::{PartitionKey, Tracker};

/// The rdkafka context of a [`KafkaConsumer`](super::KafkaConsumer).
pub(crate) struct GroupContext {
    pub(crate) tracker: Arc<Mutex<Tracker>>,
    /// Set once the member's loop is done with it and its client may be closing: a
    /// revocation of partitions no longer assigned is then skipped (see `rebalance` below).
    pub(crate) closing: AtomicBool,
}

impl GroupContext {
    /// The member is being closed: its loop is done with it.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
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
    /// rust-rdkafka's rebalance handling (the hooks below, then the (un)assignment), but for
    /// a revocation that a closing member serves after librdkafka revoked the partitions
    /// itself.
    ///
    /// A member whose loop has returned serves no events, so when another member's leave
    /// rebalances the group, its revocation waits. Closed then, librdkafka revokes the
    /// partitions itself; the close then serves the waiting revocation, and unassigning
    /// again after the group's end was decided aborts the process (`rd_kafka_cgrp_terminated:
    /// assert: !rd_kafka_assignment_in_progress`, librdkafka issue 4792). Such a revocation
    /// names partitions while nothing is assigned any more: it is skipped. A close's own
    /// revocation comes while the partitions are still assigned, and is served as usual
    /// (its commit included: librdkafka waits for it before it ends the group).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        error: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let revoking = error == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS;
        if revoking
            && self.closing()
            && partitions.count() > 0
            && consumer.assignment().is_ok_and(|held| held.count() == 0)
        {
            tracing::debug!(
                partitions = partitions.count(),
                "closing: a revocation of partitions already revoked is skipped"
            );
            let mut tracker = lock(&self.tracker);
            for key in keys(partitions) {
                tracker.revoke(&key);
            }
            return;
        }
        let rebalance = match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(partitions),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(partitions),
            other => Rebalance::Error(KafkaError::Rebalance(other.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let assigning = error == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        let applied = match (assigning, cooperative) {
            (true, true) => consumer.incremental_assign(partitions),
            (true, false) => consumer.assign(partitions),
            (false, true) => consumer.incremental_unassign(partitions),
            (false, false) => consumer.unassign(),
        };
        if let Err(error) = applied {
            tracing::warn!(%error, "applying a rebalance failed");
        }
        self.post_rebalance(consumer, &rebalance);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            // Stored offsets are those of handled messages: commit them while the partitions
            // are still ours, so their next owner does not handle them again.
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => {}
                Err(error) if nothing_to_commit(&error) => {}
                Err(error) => tracing::warn!(%error, "committing before revocation failed"),
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
