//! Inventory: stock per product, reserved for an order all lines or none, released when the
//! order is cancelled, never negative. Seeded idempotently at start-up.
//!
//! Each product's stock is a stream of its own ([`StockUnit`]) and each order's reservation
//! another ([`Reservation`]): reserving an order writes the reservation and every product's
//! unit in one unit of work, so orders of different products never wait on each other and an
//! order holds all its lines or none.

mod handlers;
mod reservation;
pub mod routes;
mod stock;

use std::sync::Arc;

use es_core::{
    Clock, CommandContext, HandlerError, InvalidStreamId, Metadata, OutboxMessage, RecordedEvent,
    Repository, RepositoryError, Rerun, SnapshotPolicy, StoreError, StoreTransaction, StreamId,
    TOMBSTONE_EVENT_TYPE, TransactionalStore, UnitError, UnitOfWork,
};
use futures::TryStreamExt;
use uuid::Uuid;

pub use reservation::{
    Never, Reservation, ReservationCommand, ReservationEvent, ReservationStatus, merge,
};
pub use stock::{
    MovementKind, StockCommand, StockError, StockEvent, StockLine, StockMovement, StockUnit,
};

use crate::history::{Page, Paged};
use crate::messages::{self, Message};
use crate::storage::{StorageError, refusal, storage};

/// Why an inventory operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// A stock unit refused.
    #[error(transparent)]
    Rejected(#[from] StockError),
    /// Storage failed (or a stream moved under the unit of work more often than it retries).
    #[error("inventory storage: {0}")]
    Storage(#[from] StorageError),
}

impl From<RepositoryError<StockError>> for InventoryError {
    fn from(error: RepositoryError<StockError>) -> Self {
        match refusal(error) {
            Ok(rejected) => Self::Rejected(rejected),
            Err(storage) => Self::Storage(storage),
        }
    }
}

impl From<RepositoryError<Never>> for InventoryError {
    fn from(error: RepositoryError<Never>) -> Self {
        Self::Storage(storage(error))
    }
}

impl From<StoreError> for InventoryError {
    fn from(error: StoreError) -> Self {
        Self::Storage(error.into())
    }
}

impl From<InvalidStreamId> for InventoryError {
    fn from(error: InvalidStreamId) -> Self {
        Self::Storage(error.into())
    }
}

impl UnitError for InventoryError {
    fn rerun(&self) -> Option<Rerun<'_>> {
        match self {
            Self::Storage(error) => error.rerun(),
            Self::Rejected(_) => None,
        }
    }
}

impl From<InventoryError> for HandlerError {
    /// Store failures keep their retry semantics; a refusal or unreadable data is permanent.
    fn from(error: InventoryError) -> Self {
        match error {
            InventoryError::Storage(StorageError::Store(store)) => store.into(),
            other => HandlerError::permanent(other),
        }
    }
}

/// The seeded quantity of the `index`th product of the catalog (deterministic).
pub fn seeded_quantity(index: usize) -> u32 {
    u32::try_from(100 + (index * 37) % 61).unwrap_or(100)
}

/// How often a unit of work runs again when a stream moved under it (two requests for the
/// same order or the same product at once).
const CONFLICT_RETRIES: u32 = 8;

/// The inventory context.
#[derive(Debug)]
pub struct Inventory<S> {
    units: Repository<StockUnit, S>,
    reservations: Repository<Reservation, S>,
}

impl<S: TransactionalStore> Inventory<S> {
    /// The context's store (its outbox is relayed from here).
    pub fn store(&self) -> &S {
        self.units.store()
    }

    /// The inventory over `store`, a stock unit entered for each of `products` (the `i`th
    /// with [`seeded_quantity(i)`](seeded_quantity); idempotently, in one transaction).
    ///
    /// # Errors
    /// [`InventoryError`] when seeding fails.
    pub async fn open(
        store: S,
        clock: Arc<dyn Clock>,
        products: &[Uuid],
    ) -> Result<Self, InventoryError> {
        let units = Repository::new(store.clone())
            .with_clock(clock.clone())
            .with_snapshots(SnapshotPolicy::EveryNEvents(100));
        let reservations = Repository::new(store)
            .with_clock(clock)
            .with_fallible_outbox(integration_messages);
        let inventory = Self {
            units,
            reservations,
        };
        let lines: Vec<(StreamId, StockLine)> = products
            .iter()
            .enumerate()
            .map(|(i, product_id)| {
                let line = StockLine {
                    product_id: *product_id,
                    quantity: seeded_quantity(i),
                };
                Ok((unit_stream(*product_id)?, line))
            })
            .collect::<Result<_, InvalidStreamId>>()?;
        let context = CommandContext::new().with_actor("seed");
        UnitOfWork::new(inventory.units.store())
            .lock(lines.iter().map(|(stream, _)| stream))
            .conflict_retries(CONFLICT_RETRIES)
            .run(|mut tx| {
                let (inventory, lines, context) = (&inventory, &lines, &context);
                async move {
                    for (stream, line) in lines {
                        let enter = StockCommand::Enter(*line);
                        inventory
                            .units
                            .execute_in(&mut tx, stream, &enter, context)
                            .await?;
                    }
                    Ok::<_, InventoryError>((tx, ()))
                }
            })
            .await?;
        Ok(inventory)
    }

    /// A product's stock (not `entered` when the product has no unit).
    ///
    /// # Errors
    /// [`InventoryError::Storage`] when storage fails.
    pub async fn stock(&self, product_id: Uuid) -> Result<StockUnit, InventoryError> {
        Ok(self.units.load(&unit_stream(product_id)?).await?.state)
    }

    /// An order's reservation (no status when the order never asked).
    ///
    /// # Errors
    /// [`InventoryError::Storage`] when storage fails.
    pub async fn reservation(&self, order_id: Uuid) -> Result<Reservation, InventoryError> {
        Ok(self
            .reservations
            .load(&reservation_stream(order_id)?)
            .await?
            .state)
    }

    /// Adds or removes stock ([`StockCommand::Increase`], [`StockCommand::Decrease`]).
    ///
    /// # Errors
    /// [`InventoryError::Rejected`] when the unit refuses.
    pub async fn change(
        &self,
        command: StockCommand,
        context: &CommandContext,
    ) -> Result<StockUnit, InventoryError> {
        let product_id = match command {
            StockCommand::Enter(line)
            | StockCommand::Increase(line)
            | StockCommand::Decrease(line)
            | StockCommand::Hold { line, .. }
            | StockCommand::GiveBack { line, .. } => line.product_id,
        };
        let stream = unit_stream(product_id)?;
        Ok(self.units.execute(&stream, &command, context).await?.state)
    }

    /// Reserves every line of an order or none (idempotent per order): the reservation and
    /// each product's unit change in one unit of work.
    ///
    /// # Errors
    /// [`StockError::ZeroQuantity`] for no line or a zero quantity; store failures.
    pub async fn reserve(
        &self,
        order_id: Uuid,
        lines: &[StockLine],
        context: &CommandContext,
    ) -> Result<ReservationStatus, InventoryError> {
        let streams = reserve_streams(order_id, lines)?;
        let done = UnitOfWork::new(self.units.store())
            .lock(&streams)
            .conflict_retries(CONFLICT_RETRIES)
            .run(|mut tx| async move {
                let status = self.reserve_in(&mut tx, order_id, lines, context).await?;
                Ok::<_, InventoryError>((tx, status))
            })
            .await?;
        Ok(done.value)
    }

    /// [`reserve`](Self::reserve) inside `tx` (lock [`reserve_streams`] first).
    ///
    /// # Errors
    /// As [`reserve`](Self::reserve).
    pub async fn reserve_in<T: StoreTransaction>(
        &self,
        tx: &mut T,
        order_id: Uuid,
        lines: &[StockLine],
        context: &CommandContext,
    ) -> Result<ReservationStatus, InventoryError> {
        let reservation_stream = reservation_stream(order_id)?;
        let reservation = self.reservations.load_in(tx, &reservation_stream).await?;
        if let Some(status) = reservation.state.status {
            return Ok(status);
        }
        let lines = merge(lines);
        if lines.is_empty() || lines.iter().any(|l| l.quantity == 0) {
            return Err(StockError::ZeroQuantity.into());
        }
        let mut units = Vec::with_capacity(lines.len());
        let mut short = Vec::new();
        // Each state is read once and decided on as read (the streams are locked).
        for line in &lines {
            let stream = unit_stream(line.product_id)?;
            let unit = self.units.load_in(tx, &stream).await?;
            if !unit.state.entered || unit.state.available < line.quantity {
                short.push(line.product_id);
            }
            units.push((stream, unit, *line));
        }
        if !short.is_empty() {
            let refuse = ReservationCommand::Refuse {
                order_id,
                product_ids: short,
            };
            self.reservations
                .execute_loaded_in(tx, &reservation_stream, reservation, &refuse, context)
                .await?;
            return Ok(ReservationStatus::Refused);
        }
        for (stream, unit, line) in units {
            let hold = StockCommand::Hold { order_id, line };
            self.units
                .execute_loaded_in(tx, &stream, unit, &hold, context)
                .await?;
        }
        let reserve = ReservationCommand::Reserve { order_id, lines };
        self.reservations
            .execute_loaded_in(tx, &reservation_stream, reservation, &reserve, context)
            .await?;
        Ok(ReservationStatus::Reserved)
    }

    /// Gives an order's stock back, if it holds any (idempotent); `None` when the order never
    /// asked for a reservation. The reservation and its products' units are locked first.
    ///
    /// # Errors
    /// Store failures.
    pub async fn release(
        &self,
        order_id: Uuid,
        context: &CommandContext,
    ) -> Result<Option<ReservationStatus>, InventoryError> {
        // The reservation names its products: lock them all first.
        let products: Vec<Uuid> = self
            .reservation(order_id)
            .await?
            .lines
            .iter()
            .map(|line| line.product_id)
            .collect();
        let streams = release_streams(order_id, &products)?;
        let done = UnitOfWork::new(self.units.store())
            .lock(&streams)
            .conflict_retries(CONFLICT_RETRIES)
            .run(|mut tx| async move {
                let status = self.release_in(&mut tx, order_id, context).await?;
                Ok::<_, InventoryError>((tx, status))
            })
            .await?;
        Ok(done.value)
    }

    /// [`release`](Self::release) inside `tx` (lock [`release_streams`] first: a product not
    /// locked makes the unit of work run again with it locked).
    ///
    /// # Errors
    /// As [`release`](Self::release).
    pub async fn release_in<T: StoreTransaction>(
        &self,
        tx: &mut T,
        order_id: Uuid,
        context: &CommandContext,
    ) -> Result<Option<ReservationStatus>, InventoryError> {
        let stream = reservation_stream(order_id)?;
        let reservation = self.reservations.load_in(tx, &stream).await?;
        if reservation.state.status != Some(ReservationStatus::Reserved) {
            return Ok(reservation.state.status);
        }
        for line in &reservation.state.lines {
            let give_back = StockCommand::GiveBack {
                order_id,
                line: *line,
            };
            self.units
                .execute_in(tx, &unit_stream(line.product_id)?, &give_back, context)
                .await?;
        }
        let release = ReservationCommand::Release { order_id };
        self.reservations
            .execute_loaded_in(tx, &stream, reservation, &release, context)
            .await?;
        Ok(Some(ReservationStatus::Released))
    }

    /// A page of a product's stock movements, oldest first (read from its unit's stream; no
    /// order is named).
    ///
    /// # Errors
    /// [`InventoryError::Storage`] when storage fails or an event does not decode.
    pub async fn movements(
        &self,
        product_id: Uuid,
        page: Page,
    ) -> Result<Paged<StockMovement>, InventoryError> {
        let events: Vec<RecordedEvent> = self
            .units
            .store()
            .read_stream(&unit_stream(product_id)?, page.read())
            .try_collect()
            .await?;
        let last = events.last().map(|event| event.version.get());
        let mut movements = Vec::with_capacity(events.len());
        for event in &events {
            if event.event_type == TOMBSTONE_EVENT_TYPE {
                continue;
            }
            let (kind, quantity) = event
                .decode::<StockEvent>(self.units.registry())
                .map_err(StorageError::other)?
                .movement();
            movements.push(StockMovement {
                version: event.version.get(),
                kind,
                quantity,
                timestamp: event.metadata.timestamp,
            });
        }
        Ok(Paged::new(movements, page, events.len(), last))
    }
}

/// The streams a reservation writes: the order's and each product's, to lock first.
///
/// # Errors
/// [`InvalidStreamId`] for an id that makes no stream name (never for UUIDs).
pub fn reserve_streams(
    order_id: Uuid,
    lines: &[StockLine],
) -> Result<Vec<StreamId>, InvalidStreamId> {
    let mut streams = vec![reservation_stream(order_id)?];
    for line in merge(lines) {
        streams.push(unit_stream(line.product_id)?);
    }
    Ok(streams)
}

/// The streams a release writes: the order's and each product's it names, to lock first.
///
/// # Errors
/// [`InvalidStreamId`] for an id that makes no stream name (never for UUIDs).
pub fn release_streams(
    order_id: Uuid,
    product_ids: &[Uuid],
) -> Result<Vec<StreamId>, InvalidStreamId> {
    let mut products = product_ids.to_vec();
    products.sort_unstable();
    products.dedup();
    let mut streams = vec![reservation_stream(order_id)?];
    for product_id in products {
        streams.push(unit_stream(product_id)?);
    }
    Ok(streams)
}

fn unit_stream(product_id: Uuid) -> Result<StreamId, InvalidStreamId> {
    StreamId::for_aggregate(<StockUnit as es_core::Aggregate>::TYPE, product_id)
}

fn reservation_stream(order_id: Uuid) -> Result<StreamId, InvalidStreamId> {
    StreamId::for_aggregate(<Reservation as es_core::Aggregate>::TYPE, order_id)
}

fn integration_messages(
    stream: &StreamId,
    _state: &Reservation,
    events: &[(ReservationEvent, Metadata)],
) -> Result<Vec<OutboxMessage>, serde_json::Error> {
    events
        .iter()
        .map(|(event, metadata)| {
            let message = match event {
                ReservationEvent::Reserved { order_id, .. } => messages::StockReserved {
                    order_id: *order_id,
                }
                .to_message(),
                ReservationEvent::Refused {
                    order_id,
                    product_ids,
                } => messages::StockUnavailable {
                    order_id: *order_id,
                    product_ids: product_ids.clone(),
                }
                .to_message(),
                ReservationEvent::Released { order_id, .. } => messages::StockReleased {
                    order_id: *order_id,
                }
                .to_message(),
            };
            Ok(message?
                .with_source("inventory", stream.as_str())
                .caused_by(metadata))
        })
        .collect()
}
