//! Inventory: stock per product, reserved for an order all lines or none, released when the
//! order is cancelled, never negative. Seeded idempotently at start-up.

pub mod routes;
mod warehouse;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use es_core::{
    Clock, CommandContext, Delivery, EventStore, HandlerError, MessageHandler, Metadata,
    OutboxMessage, Projection, Repository, RepositoryError, SnapshotPolicy, StreamId, StreamRead,
};
use futures::TryStreamExt;
use uuid::Uuid;

pub use warehouse::{
    ReservationStatus, StockLine, Warehouse, WarehouseCommand, WarehouseError, WarehouseEvent,
};

use crate::backend::ContextStore;
use crate::catalog::{StockClient, seed};
use crate::handling::{caused_by, decode, transient_unless_permanent};
use crate::history::{HistoryEntry, HistoryProjection};
use crate::messages::{self, Message, ReleaseStock, ReserveStock};

/// The stream of the warehouse.
pub const WAREHOUSE_STREAM: &str = "inventory-warehouse";

/// Why an inventory operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// The warehouse refused.
    #[error(transparent)]
    Rejected(WarehouseError),
    /// Storage failed.
    #[error("inventory storage failed: {0}")]
    Internal(String),
}

impl From<RepositoryError<WarehouseError>> for InventoryError {
    fn from(error: RepositoryError<WarehouseError>) -> Self {
        match error {
            RepositoryError::Rejected(rejected) => InventoryError::Rejected(rejected),
            other => InventoryError::Internal(other.to_string()),
        }
    }
}

/// The seeded quantity of the `index`th product of the catalog (deterministic).
pub fn seeded_quantity(index: usize) -> u32 {
    u32::try_from(100 + (index * 37) % 61).unwrap_or(100)
}

/// The inventory context.
#[derive(Debug)]
pub struct Inventory {
    warehouse: Repository<Warehouse, ContextStore>,
}

impl Inventory {
    /// The inventory over `store`, seeded with the catalog's products (idempotently).
    ///
    /// # Errors
    /// [`InventoryError`] when seeding fails.
    pub async fn open(store: ContextStore, clock: Arc<dyn Clock>) -> Result<Self, InventoryError> {
        let warehouse = Repository::new(store)
            .with_clock(clock)
            // Every warehouse decision is safe to recompute on newer state.
            .with_conflict_retries(32)
            .with_snapshots(SnapshotPolicy::EveryNEvents(100))
            .with_outbox(integration_messages);
        let inventory = Self { warehouse };
        let units = seed()
            .iter()
            .enumerate()
            .map(|(i, p)| StockLine {
                product_id: p.product_id,
                quantity: seeded_quantity(i),
            })
            .collect();
        inventory
            .execute(&WarehouseCommand::EnterUnits(units), &context("seed"))
            .await?;
        Ok(inventory)
    }

    /// The warehouse's current state.
    ///
    /// # Errors
    /// [`InventoryError::Internal`] when storage fails.
    pub async fn warehouse(&self) -> Result<Warehouse, InventoryError> {
        Ok(self.warehouse.load(&stream()?).await?.state)
    }

    /// Runs a warehouse command.
    ///
    /// # Errors
    /// [`InventoryError::Rejected`] when the warehouse refuses.
    pub async fn execute(
        &self,
        command: &WarehouseCommand,
        context: &CommandContext,
    ) -> Result<Warehouse, InventoryError> {
        Ok(self
            .warehouse
            .execute(&stream()?, command, context)
            .await?
            .state)
    }

    /// A product's history: every warehouse event about it.
    ///
    /// # Errors
    /// [`InventoryError::Internal`] when storage fails or an event does not decode.
    pub async fn history(&self, product_id: Uuid) -> Result<Vec<HistoryEntry>, InventoryError> {
        let internal = |e: &dyn std::fmt::Display| InventoryError::Internal(e.to_string());
        let stream = stream()?;
        let mut events = self
            .warehouse
            .store()
            .read_stream(&stream, StreamRead::forward());
        let projection = HistoryProjection {
            aggregate_id: product_id,
        };
        let mut entries = Vec::new();
        while let Some(recorded) = events.try_next().await.map_err(|e| internal(&e))? {
            let event: WarehouseEvent = recorded
                .decode(self.warehouse.registry())
                .map_err(|e| internal(&e))?;
            if event.product_ids().contains(&product_id) {
                projection
                    .apply(&mut entries, &recorded)
                    .await
                    .map_err(|e| internal(&e))?;
            }
        }
        Ok(entries)
    }
}

#[async_trait]
impl StockClient for Inventory {
    async fn quantities(&self, product_ids: &[Uuid]) -> Result<HashMap<Uuid, u32>, String> {
        let warehouse = self.warehouse().await.map_err(|e| e.to_string())?;
        Ok(product_ids
            .iter()
            .filter_map(|id| warehouse.available(id).map(|q| (*id, q)))
            .collect())
    }
}

/// Handles the saga's `ReserveStock` and `ReleaseStock` commands.
#[async_trait]
impl MessageHandler for Inventory {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let context = caused_by(&delivery.message, "inventory");
        let command = if let Some(reserve) = decode::<ReserveStock>(delivery)? {
            let lines = reserve
                .lines
                .iter()
                .map(|l| StockLine {
                    product_id: l.product_id,
                    quantity: l.quantity,
                })
                .collect();
            WarehouseCommand::Reserve {
                order_id: reserve.order_id,
                lines,
            }
        } else if let Some(release) = decode::<ReleaseStock>(delivery)? {
            WarehouseCommand::Release {
                order_id: release.order_id,
            }
        } else {
            return Err(HandlerError::permanent(format!(
                "inventory does not handle {}",
                delivery.message.message_type
            )));
        };
        match self
            .warehouse
            .execute(&stream_for_handler()?, &command, &context)
            .await
        {
            Ok(_) => Ok(()),
            // An order with no line or a zero quantity can never be reserved: answer that it
            // is unavailable rather than retry forever.
            Err(RepositoryError::Rejected(error)) => {
                Err(HandlerError::permanent(error.to_string()))
            }
            Err(error) => Err(transient_unless_permanent(error)),
        }
    }
}

fn integration_messages(
    _stream: &StreamId,
    _state: &Warehouse,
    events: &[(WarehouseEvent, Metadata)],
) -> Vec<OutboxMessage> {
    events
        .iter()
        .filter_map(|(event, metadata)| {
            let message = match event {
                WarehouseEvent::Reserved { order_id, .. } => messages::StockReserved {
                    order_id: *order_id,
                }
                .to_message(),
                WarehouseEvent::ReservationRefused {
                    order_id,
                    product_ids,
                } => messages::StockUnavailable {
                    order_id: *order_id,
                    product_ids: product_ids.clone(),
                }
                .to_message(),
                WarehouseEvent::Released { order_id, .. } => messages::StockReleased {
                    order_id: *order_id,
                }
                .to_message(),
                _ => return None,
            };
            Some(
                message
                    .with_source("inventory", WAREHOUSE_STREAM)
                    .caused_by(metadata),
            )
        })
        .collect()
}

fn stream() -> Result<StreamId, InventoryError> {
    StreamId::new(WAREHOUSE_STREAM).map_err(|e| InventoryError::Internal(e.to_string()))
}

fn stream_for_handler() -> Result<StreamId, HandlerError> {
    StreamId::new(WAREHOUSE_STREAM).map_err(|e| HandlerError::permanent(e.to_string()))
}

fn context(actor: &str) -> CommandContext {
    CommandContext::new().with_actor(actor)
}
