//! Inventory's message handlers: the saga's `ReserveStock` and `ReleaseStock`, each applied
//! exactly once (the record of the message commits with the reservation and the stock units).

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{
    Delivery, HandlerError, HandlerRegistry, InboxHandler, StreamId, TransactionalHandler,
    TransactionalStore,
};

use super::{Inventory, StockLine, release_streams, reserve_streams};
use crate::handling::caused_by;
use crate::messages::{ReleaseStock, ReserveStock};

/// The subscriber name inventory's records of handled messages are kept under.
const SUBSCRIBER: &str = "inventory";

impl<S: TransactionalStore> Inventory<S> {
    /// The handlers of inventory's commands, for its consumer.
    pub fn handlers(self: &Arc<Self>) -> HandlerRegistry {
        let store = self.units.store().clone();
        HandlerRegistry::new()
            .on::<ReserveStock>(InboxHandler::new(
                SUBSCRIBER,
                store.clone(),
                Reserve(self.clone()),
            ))
            .on::<ReleaseStock>(InboxHandler::new(SUBSCRIBER, store, Release(self.clone())))
    }
}

struct Reserve<S>(Arc<Inventory<S>>);

fn lines(reserve: &ReserveStock) -> Vec<StockLine> {
    reserve
        .lines
        .iter()
        .map(|l| StockLine {
            product_id: l.product_id,
            quantity: l.quantity,
        })
        .collect()
}

#[async_trait]
impl<S: TransactionalStore> TransactionalHandler<S::Transaction> for Reserve<S> {
    type Message = ReserveStock;

    fn streams(&self, reserve: &ReserveStock) -> Vec<StreamId> {
        reserve_streams(reserve.order_id, &lines(reserve)).unwrap_or_default()
    }

    async fn handle(
        &self,
        tx: &mut S::Transaction,
        reserve: &ReserveStock,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let context = caused_by(&delivery.message, SUBSCRIBER);
        // An order with no line or a zero quantity can never be reserved: it is
        // dead-lettered rather than retried.
        self.0
            .reserve_in(tx, reserve.order_id, &lines(reserve), &context)
            .await?;
        Ok(())
    }
}

struct Release<S>(Arc<Inventory<S>>);

#[async_trait]
impl<S: TransactionalStore> TransactionalHandler<S::Transaction> for Release<S> {
    type Message = ReleaseStock;

    fn streams(&self, release: &ReleaseStock) -> Vec<StreamId> {
        release_streams(release.order_id, &release.product_ids).unwrap_or_default()
    }

    async fn handle(
        &self,
        tx: &mut S::Transaction,
        release: &ReleaseStock,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let context = caused_by(&delivery.message, SUBSCRIBER);
        self.0.release_in(tx, release.order_id, &context).await?;
        Ok(())
    }
}
