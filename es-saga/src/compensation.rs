//! Completed steps and their compensations, kept in a saga's state.

use es_core::OutboxMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codec::{CodecError, encode};
use es_core::MessageType;

/// A command that undoes a step, stored in the saga's state until it is needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompensatingCommand {
    /// The command's type name.
    pub message_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload.
    pub payload: Value,
}

impl CompensatingCommand {
    /// The compensating command `command`.
    ///
    /// # Errors
    /// [`CodecError::Encode`] when `command` does not serialize.
    pub fn new<C: MessageType + Serialize>(command: &C) -> Result<Self, CodecError> {
        let message = encode(command)?;
        Ok(Self {
            message_type: message.message_type,
            schema_version: message.schema_version,
            payload: message.payload,
        })
    }

    /// The outbox message that sends it (no partition key or topic: the runner fills them).
    pub fn to_message(&self) -> OutboxMessage {
        OutboxMessage::new(
            self.message_type.clone(),
            String::new(),
            self.payload.clone(),
        )
        .with_schema_version(self.schema_version)
    }
}

/// One completed step and what undoes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletedStep {
    /// The step's name.
    pub step: String,
    /// What undoes it; `None` when nothing needs undoing.
    pub compensation: Option<CompensatingCommand>,
}

/// The steps a saga instance completed, in order, kept in its state: when the saga must roll
/// back, [`compensate`](CompletedSteps::compensate) yields their compensating commands in
/// reverse order, once.
///
/// ```
/// use es_saga::{CompensatingCommand, CompletedSteps, MessageType};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct ReleaseStock { order_id: String }
/// impl MessageType for ReleaseStock { const MESSAGE_TYPE: &'static str = "ReleaseStock"; }
///
/// #[derive(Serialize)]
/// struct RefundPayment { order_id: String }
/// impl MessageType for RefundPayment { const MESSAGE_TYPE: &'static str = "RefundPayment"; }
///
/// let mut steps = CompletedSteps::default();
/// steps.record("stock", Some(CompensatingCommand::new(&ReleaseStock { order_id: "o-1".into() })?));
/// steps.record("payment", Some(CompensatingCommand::new(&RefundPayment { order_id: "o-1".into() })?));
/// let undo: Vec<String> = steps.compensate().into_iter().map(|m| m.message_type).collect();
/// assert_eq!(undo, ["RefundPayment", "ReleaseStock"]);
/// assert!(steps.compensate().is_empty(), "compensations are yielded once");
/// # Ok::<(), es_saga::CodecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletedSteps {
    /// Completed steps not compensated yet, oldest first.
    #[serde(default)]
    pub completed: Vec<CompletedStep>,
    /// Steps already compensated, in the order they were undone.
    #[serde(default)]
    pub compensated: Vec<String>,
}

impl CompletedSteps {
    /// Records that `step` completed, undone by `compensation` if the saga rolls back.
    pub fn record(&mut self, step: impl Into<String>, compensation: Option<CompensatingCommand>) {
        self.completed.push(CompletedStep {
            step: step.into(),
            compensation,
        });
    }

    /// Whether `step` completed and was not compensated.
    pub fn contains(&self, step: &str) -> bool {
        self.completed.iter().any(|done| done.step == step)
    }

    /// Whether `step` was compensated.
    pub fn is_compensated(&self, step: &str) -> bool {
        self.compensated.iter().any(|done| done == step)
    }

    /// Whether nothing remains to compensate.
    pub fn is_empty(&self) -> bool {
        self.completed.is_empty()
    }

    /// The compensating commands of every completed step, newest step first, marking those
    /// steps compensated; a second call yields nothing.
    pub fn compensate(&mut self) -> Vec<OutboxMessage> {
        let mut commands = Vec::new();
        while let Some(done) = self.completed.pop() {
            if let Some(compensation) = &done.compensation {
                commands.push(compensation.to_message());
            }
            self.compensated.push(done.step);
        }
        commands
    }
}
