//! Adapters between contexts, in the composition root: a context states what it needs of
//! another as a client trait, and the in-process implementation lives here (a split
//! deployment implements the same trait over HTTP), so that no context imports another.

use async_trait::async_trait;
use uuid::Uuid;

use crate::customers::{Customers, CustomersError};
use crate::money::Money;
use crate::payments::CreditClient;

#[async_trait]
impl CreditClient for Customers {
    async fn credit_limit(&self, customer_id: Uuid) -> Result<Option<Money>, String> {
        match self.profile(customer_id).await {
            Ok(profile) => Ok(Some(profile.credit_limit)),
            Err(CustomersError::NotFound) => Ok(None),
            Err(other) => Err(other.to_string()),
        }
    }
}
