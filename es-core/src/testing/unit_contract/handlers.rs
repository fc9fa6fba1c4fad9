//! Messages handled as commands, exactly once.

use futures::future::join_all;
use serde::Deserialize;
use serde_json::json;

use super::{UnitContractStore, outbox_messages};
use crate::aggregate_handler::AggregateHandler;
use crate::dispatch::HandlerRegistry;
use crate::exactly_once::{InboxHandler, TransactionalHandler};
use crate::ids::{ExpectedVersion, InvalidStreamId, StreamId, Version};
use crate::message_type::MessageType;
use crate::messaging::{Delivery, HandlerError, MessageHandler};
use crate::outbox::OutboxMessage;
use crate::repository::Repository;
use crate::store::AppendRequest;
use crate::testing::fixture::{NegativeAmount, Tally, TallyCommand};
use crate::testing::store_contract::{events, stream};
use crate::transaction::{StoreTransaction, TransactionalStore};

/// Asks for an amount to be added to a tally.
#[derive(Debug, Deserialize)]
struct AddToTally {
    tally: String,
    amount: i64,
}

impl MessageType for AddToTally {
    const MESSAGE_TYPE: &'static str = "ContractAddToTally";
}

/// Adds the amount of each message to its tally; a refused amount is answered.
struct AddHandler;

impl AggregateHandler for AddHandler {
    type Message = AddToTally;
    type Aggregate = Tally;

    fn stream(&self, message: &AddToTally) -> Result<StreamId, InvalidStreamId> {
        StreamId::new(message.tally.clone())
    }

    fn command(&self, message: &AddToTally) -> TallyCommand {
        TallyCommand::Add(message.amount)
    }

    fn rejected(&self, message: &AddToTally, error: &NegativeAmount) -> Vec<OutboxMessage> {
        vec![OutboxMessage::new(
            "ContractAddRefused",
            message.tally.clone(),
            json!({ "amount": message.amount, "reason": error.to_string() }),
        )]
    }
}

/// The handlers of one process: the tally repository (one outbox message per event) behind
/// a registry.
fn registry<S: TransactionalStore>(store: &S) -> HandlerRegistry {
    let tallies =
        Repository::<Tally, S>::new(store.clone()).with_outbox(|stream, state, events| {
            events
                .iter()
                .map(|(_, metadata)| {
                    OutboxMessage::new(
                        "ContractTallyChanged",
                        stream.as_str(),
                        json!({ "total": state.total }),
                    )
                    .caused_by(metadata)
                })
                .collect()
        });
    HandlerRegistry::new().on::<AddToTally>(tallies.message_handler("tallies", AddHandler))
}

fn delivery(tally: &StreamId, amount: i64, offset: u64) -> Delivery {
    let message = OutboxMessage::new(
        AddToTally::MESSAGE_TYPE,
        tally.as_str(),
        json!({ "tally": tally.as_str(), "amount": amount }),
    );
    Delivery {
        topic: "tallies".to_owned(),
        partition: 0,
        offset,
        attempt: 1,
        message,
    }
}

async fn tally<S: TransactionalStore>(store: &S, id: &StreamId) -> (i64, Version) {
    let loaded = Repository::<Tally, S>::new(store.clone())
        .load(id)
        .await
        .expect("load");
    (loaded.state.total, loaded.version)
}

/// A message delivered twice, one delivery after the other: its command's events and outbox
/// messages are committed once, and the second delivery is acknowledged.
pub async fn duplicate_delivery_has_no_effect<S: UnitContractStore>(store: S) {
    let handlers = registry(&store);
    let id = stream("tally");
    let first = delivery(&id, 7, 0);
    handlers.handle(&first).await.expect("first delivery");
    let mut again = first.clone();
    again.attempt = 2;
    handlers
        .handle(&again)
        .await
        .expect("the redelivery is acknowledged");
    assert_eq!(tally(&store, &id).await, (7, Version::new(1)));
    let outbox = outbox_messages(&store, 1).await;
    assert_eq!(outbox.len(), 1, "one outbox message: {outbox:?}");
    let recorded: Vec<_> = futures::TryStreamExt::try_collect(
        store.read_stream(&id, crate::store::StreamRead::forward()),
    )
    .await
    .expect("read");
    assert_eq!(
        recorded[0].metadata.causation_id,
        Some(first.message.message_id),
        "the message caused the event"
    );
    assert_eq!(
        outbox[0].causation_id,
        Some(recorded[0].event_id().as_uuid())
    );
}

/// Eight concurrent deliveries of one message: one applies it, the others are acknowledged
/// without effects.
pub async fn concurrent_duplicates_apply_once<S: UnitContractStore>(store: S) {
    let handlers = registry(&store);
    let id = stream("tally");
    let message = delivery(&id, 3, 0);
    let results = join_all((0..8).map(|_| handlers.handle(&message))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(tally(&store, &id).await, (3, Version::new(1)));
    assert_eq!(outbox_messages(&store, 1).await.len(), 1);
}

/// Eight different messages to one aggregate at once: every command is applied once (a
/// conflicting one runs again).
pub async fn concurrent_messages_to_one_aggregate_all_apply<S: UnitContractStore>(store: S) {
    let handlers = registry(&store);
    let id = stream("tally");
    let deliveries: Vec<_> = (1..=8).map(|n| delivery(&id, n, n as u64)).collect();
    let results = join_all(deliveries.iter().map(|d| handlers.handle(d))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(tally(&store, &id).await, ((1..=8).sum(), Version::new(8)));
    assert_eq!(outbox_messages(&store, 8).await.len(), 8);
    let again = join_all(deliveries.iter().map(|d| handlers.handle(d))).await;
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    assert_eq!(tally(&store, &id).await, ((1..=8).sum(), Version::new(8)));
}

/// A process that committed a message's effects and crashed before committing its offset: the
/// message comes again, to a new process, and changes nothing.
pub async fn redelivery_after_a_crash_has_no_effect<S: UnitContractStore>(store: S) {
    let id = stream("tally");
    let message = delivery(&id, 11, 4);
    registry(&store)
        .handle(&message)
        .await
        .expect("before the crash");
    let restarted = registry(&store);
    restarted.handle(&message).await.expect("after the restart");
    assert_eq!(tally(&store, &id).await, (11, Version::new(1)));
    assert_eq!(outbox_messages(&store, 1).await.len(), 1);
}

/// A command the aggregate rejects is acknowledged (never retried into a dead-letter topic),
/// writes no event, and commits its reply once.
pub async fn rejected_command_is_acknowledged_with_its_reply<S: UnitContractStore>(store: S) {
    let handlers = registry(&store);
    let id = stream("tally");
    let refused = delivery(&id, -4, 0);
    handlers
        .handle(&refused)
        .await
        .expect("a rejection is acknowledged");
    handlers
        .handle(&refused)
        .await
        .expect("and so is its redelivery");
    assert_eq!(tally(&store, &id).await, (0, Version::ZERO));
    let outbox = outbox_messages(&store, 1).await;
    assert_eq!(outbox.len(), 1, "one reply: {outbox:?}");
    assert_eq!(outbox[0].message_type, "ContractAddRefused");
    assert_eq!(outbox[0].causation_id, Some(refused.message.message_id));
    assert_eq!(outbox[0].payload["amount"], -4);
}

/// Moves an amount between two streams; it names only the first, so the second is found late.
struct Transfer;

#[derive(Debug, Deserialize)]
struct Transferred {
    from: String,
    to: String,
}

impl MessageType for Transferred {
    const MESSAGE_TYPE: &'static str = "ContractTransferred";
}

#[async_trait::async_trait]
impl<T: StoreTransaction + 'static> TransactionalHandler<T> for Transfer {
    type Message = Transferred;

    fn streams(&self, message: &Transferred) -> Vec<StreamId> {
        StreamId::new(message.from.clone()).into_iter().collect()
    }

    async fn handle(
        &self,
        tx: &mut T,
        message: &Transferred,
        _: &Delivery,
    ) -> Result<(), HandlerError> {
        for id in [&message.from, &message.to] {
            let id = StreamId::new(id.clone()).map_err(HandlerError::permanent)?;
            tx.append(AppendRequest::new(id, ExpectedVersion::Any).with_events(events(0..1)))
                .await?;
        }
        Ok(())
    }
}

/// A transactional handler that appends to a stream it did not name runs again with the stream
/// locked, and commits both appends once; its redelivery changes nothing.
pub async fn late_stream_handler_runs_again_and_commits_once<S: UnitContractStore>(store: S) {
    let handlers = HandlerRegistry::new().on::<Transferred>(InboxHandler::new(
        "transfers",
        store.clone(),
        Transfer,
    ));
    let (from, to) = (stream("from"), stream("to"));
    let message = OutboxMessage::new(
        Transferred::MESSAGE_TYPE,
        from.as_str(),
        json!({ "from": from.as_str(), "to": to.as_str() }),
    );
    let delivery = Delivery {
        topic: "transfers".to_owned(),
        partition: 0,
        offset: 0,
        attempt: 1,
        message,
    };
    handlers.handle(&delivery).await.expect("handled");
    handlers
        .handle(&delivery)
        .await
        .expect("redelivery acknowledged");
    for id in [&from, &to] {
        assert_eq!(
            store.stream_version(id).await.expect("version"),
            Version::new(1)
        );
    }
}
