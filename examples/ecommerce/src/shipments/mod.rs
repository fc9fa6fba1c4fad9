//! Shipments: one per order (the shipment id is derived from the order id); a configurable
//! failure rule lets demos and tests exercise the compensation path deterministically.

mod handlers;
mod shipment;

use std::sync::Arc;

use es_core::privacy::Privacy;
use es_core::{Clock, Metadata, OutboxMessage, Repository, StreamId, TransactionalStore};
use uuid::Uuid;

pub use shipment::{
    CANCELLED, FAILED, NeverRefused, Shipment, ShipmentCommand, ShipmentEvent, ShipmentStatus,
    shipment_id_for,
};

use crate::failures::FailureRules;
use crate::messages::{self, Message};
use crate::storage::{StorageError, storage};

/// The shipments context.
#[derive(Debug)]
pub struct Shipments<S> {
    shipments: Repository<Shipment, S>,
    failures: FailureRules,
    privacy: Privacy,
}

impl<S: TransactionalStore> Shipments<S> {
    /// The context's store (its outbox is relayed from here).
    pub fn store(&self) -> &S {
        self.shipments.store()
    }

    /// The shipments context over `store`, keeping where shipments go encrypted with
    /// `privacy`.
    pub fn new(store: S, failures: FailureRules, clock: Arc<dyn Clock>, privacy: Privacy) -> Self {
        let shipments = Repository::new(store)
            .with_clock(clock)
            .with_privacy(privacy.clone())
            .with_conflict_retries(8)
            .with_fallible_outbox(integration_messages);
        Self {
            shipments,
            failures,
            privacy,
        }
    }

    /// An order's shipment.
    ///
    /// # Errors
    /// When storage fails.
    pub async fn shipment(&self, order_id: Uuid) -> Result<Shipment, StorageError> {
        let stream = stream(order_id)?;
        self.shipments
            .load(&stream)
            .await
            .map(|l| l.state)
            .map_err(storage)
    }
}

fn integration_messages(
    stream: &StreamId,
    _state: &Shipment,
    events: &[(ShipmentEvent, Metadata)],
) -> Result<Vec<OutboxMessage>, serde_json::Error> {
    events
        .iter()
        .filter_map(|(event, metadata)| {
            let message = match event {
                ShipmentEvent::Shipped {
                    shipment_id,
                    order_id,
                } => messages::PackageShipped {
                    order_id: *order_id,
                    shipment_id: *shipment_id,
                }
                .to_message(),
                ShipmentEvent::Cancelled {
                    shipment_id,
                    order_id,
                    reason,
                } if reason == FAILED => messages::ShipmentFailed {
                    order_id: *order_id,
                    shipment_id: *shipment_id,
                }
                .to_message(),
                ShipmentEvent::Cancelled {
                    shipment_id,
                    order_id,
                    ..
                } => messages::ShipmentCancelled {
                    order_id: *order_id,
                    shipment_id: *shipment_id,
                }
                .to_message(),
                ShipmentEvent::Created { .. } => return None,
            };
            Some(message.map(|message| {
                message
                    .with_source("shipment", stream.as_str())
                    .caused_by(metadata)
            }))
        })
        .collect()
}

fn stream(order_id: Uuid) -> Result<StreamId, es_core::InvalidStreamId> {
    StreamId::for_aggregate(<Shipment as es_core::Aggregate>::TYPE, order_id)
}
