//! The in-memory outbox, shared by the in-memory stores that write integration messages.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::lock;
use crate::error::StoreError;
use crate::ids::{Position, StreamId};
use crate::outbox::{OutboxBatch, OutboxMessage, OutboxSource, StoredOutboxMessage};

/// An in-memory outbox: stores append messages in their commits and a relay reads them as an
/// [`OutboxSource`]. Clones share the same messages.
///
/// Each [`push`](MemoryOutbox::push) is one commit: its messages get positions
/// `Position::new(commit number, sequence)` with both parts increasing, and since pushes are
/// serialized no message ever appears behind one already readable.
///
/// ```
/// use es_core::memory::MemoryOutbox;
/// use es_core::{OutboxMessage, OutboxSource, Position};
/// use serde_json::json;
///
/// # futures::executor::block_on(async {
/// let outbox = MemoryOutbox::new();
/// outbox.push(vec![OutboxMessage::new("OrderPlaced", "order-7", json!({}))]);
/// let batch = outbox.read_outbox(Position::START, 10).await?;
/// assert_eq!(batch.messages.len(), 1);
/// assert!(batch.reached_end);
/// assert_eq!(outbox.delete_outbox_up_to(batch.messages[0].position).await?, 1);
/// # Ok::<(), es_core::StoreError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryOutbox {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    commits: u64,
    sequence: u64,
    messages: VecDeque<StoredOutboxMessage>,
    /// The stream whose append wrote each message, by message id, for erasure.
    streams: HashMap<uuid::Uuid, StreamId>,
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `messages` atomically, as one commit (nothing happens when it is empty).
    pub fn push(&self, messages: Vec<OutboxMessage>) {
        if messages.is_empty() {
            return;
        }
        let mut state = lock(&self.state);
        state.commits += 1;
        let commit = state.commits;
        for message in messages {
            state.sequence += 1;
            let position = Position::new(commit, state.sequence);
            state
                .messages
                .push_back(StoredOutboxMessage { position, message });
        }
    }

    /// Appends `messages` as one commit, remembering that `stream`'s append wrote them (so
    /// [`erase_stream`](Self::erase_stream) can remove them).
    pub fn push_for_stream(&self, stream: &StreamId, messages: Vec<OutboxMessage>) {
        if messages.is_empty() {
            return;
        }
        let ids: Vec<uuid::Uuid> = messages.iter().map(|m| m.message_id).collect();
        self.push(messages);
        let mut state = lock(&self.state);
        for id in ids {
            state.streams.insert(id, stream.clone());
        }
    }

    /// Removes every message written by `stream`'s appends (erasure); returns how many.
    pub fn erase_stream(&self, stream: &StreamId) -> usize {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let before = state.messages.len();
        let streams = &mut state.streams;
        state.messages.retain(|stored| {
            let id = stored.message.message_id;
            match streams.get(&id) {
                Some(owner) if owner == stream => {
                    streams.remove(&id);
                    false
                }
                _ => true,
            }
        });
        before - state.messages.len()
    }

    /// Every stored message, in order (for tests and diagnostics).
    pub fn messages(&self) -> Vec<StoredOutboxMessage> {
        lock(&self.state).messages.iter().cloned().collect()
    }

    /// How many messages are stored.
    pub fn len(&self) -> usize {
        lock(&self.state).messages.len()
    }

    /// Whether no message is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl OutboxSource for MemoryOutbox {
    async fn read_outbox(&self, after: Position, limit: usize) -> Result<OutboxBatch, StoreError> {
        let state = lock(&self.state);
        let start = state
            .messages
            .partition_point(|stored| stored.position <= after);
        let end = start.saturating_add(limit).min(state.messages.len());
        Ok(OutboxBatch {
            messages: state.messages.range(start..end).cloned().collect(),
            reached_end: end == state.messages.len(),
        })
    }

    async fn delete_outbox_up_to(&self, up_to: Position) -> Result<u64, StoreError> {
        let mut state = lock(&self.state);
        let count = state
            .messages
            .partition_point(|stored| stored.position <= up_to);
        let drained: Vec<StoredOutboxMessage> = state.messages.drain(..count).collect();
        for stored in drained {
            state.streams.remove(&stored.message.message_id);
        }
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }
}
