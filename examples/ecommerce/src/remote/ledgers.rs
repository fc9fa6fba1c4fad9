//! Inventory's and payments' facts over their internal routes: what the orders service reads
//! to check the invariants that span services (an order against its reservation, its
//! payment and the stock).

use async_trait::async_trait;
use es_core::BoxError;
use hyper::{Method, StatusCode};
use uuid::Uuid;

use super::ServiceClient;
use crate::invariants::{Ledgers, OrderPayment};
use crate::inventory::routes::{ReservationView, StockView};
use crate::inventory::{ReservationStatus, StockUnit};
use crate::payments::routes::PaymentRecord;

/// [`Ledgers`] read from the inventory and payments services.
#[derive(Debug, Clone)]
pub struct HttpLedgers {
    /// The inventory service.
    pub inventory: ServiceClient,
    /// The payments service.
    pub payments: ServiceClient,
}

#[async_trait]
impl Ledgers for HttpLedgers {
    async fn reservation(&self, order_id: Uuid) -> Result<Option<ReservationStatus>, BoxError> {
        let service = self.inventory.service();
        let reply = self
            .inventory
            .call(
                Method::GET,
                &format!("/api/v2/internal/inventory/reservations/{order_id}"),
                None,
                true,
            )
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let view: ReservationView = reply.expect(service, StatusCode::OK)?;
        // The view names the status as the enum's own serde form does.
        let status: ReservationStatus =
            serde_json::from_value(serde_json::Value::String(view.status))
                .map_err(|e| format!("{service} answered an unknown reservation status: {e}"))?;
        Ok(Some(status))
    }

    async fn stock(&self, product_id: Uuid) -> Result<StockUnit, BoxError> {
        let service = self.inventory.service();
        let reply = self
            .inventory
            .call(
                Method::GET,
                &format!("/api/v2/internal/inventory/{product_id}"),
                None,
                true,
            )
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(StockUnit::default());
        }
        let view: StockView = reply.expect(service, StatusCode::OK)?;
        Ok(StockUnit {
            entered: true,
            available: view.quantity,
            held: view.reserved,
        })
    }

    async fn payment(&self, customer_id: Uuid, order_id: Uuid) -> Result<OrderPayment, BoxError> {
        let service = self.payments.service();
        let record: PaymentRecord = self
            .payments
            .call(
                Method::GET,
                &format!("/api/v2/internal/payments/{customer_id}/{order_id}"),
                None,
                true,
            )
            .await?
            .expect(service, StatusCode::OK)?;
        Ok(OrderPayment {
            status: record.status,
            created: record.created,
        })
    }
}
