//! Two members of one group share the work.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::{BusFixture, contract_message, describe, publish, unique_name};
use crate::messaging::Consumer;

/// How long to keep listening, once every message was handled, for one handled twice.
const DUPLICATE_GRACE: Duration = Duration::from_millis(500);

/// Two members of one group split the topic's partitions: both handle messages, and when each
/// commits what it receives, every message is handled (committed) by exactly one of them.
///
/// Messages are published in batches, while both members run, until both have handled some
/// (a real broker may give every partition to the first member until the second one joins).
/// A commit refused because a rebalance moved the partition does not count as handling: the
/// partition's new owner receives the message again.
pub async fn group_members_split_partitions<F: BusFixture>(fixture: &F) {
    let topic = fixture.topic("split").await;
    let group = unique_name("split");
    let mut first = fixture.consumer(&group, &[&topic]).await;
    let mut second = fixture.consumer(&group, &[&topic]).await;
    let (handled_tx, handled_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);

    let driver = async {
        let handled = drive(fixture, &topic, handled_rx).await;
        let _ = stop_tx.send(true);
        handled
    };
    let ((), (), handled) = tokio::join!(
        run_member("first", &mut first, handled_tx.clone(), stop_rx.clone()),
        run_member("second", &mut second, handled_tx, stop_rx),
        driver
    );

    let twice: Vec<String> = handled
        .iter()
        .filter(|(_, members)| members.len() > 1)
        .map(|(id, members)| format!("{id} by {members:?}"))
        .collect();
    assert!(
        twice.is_empty(),
        "{} of {} messages were handled more than once, among them: {}",
        twice.len(),
        handled.len(),
        twice[..twice.len().min(5)].join(", ")
    );
}

/// Publishes until both members handled messages, then waits until every message was handled;
/// returns which members handled each message.
async fn drive<F: BusFixture>(
    fixture: &F,
    topic: &str,
    mut handled_rx: mpsc::UnboundedReceiver<(&'static str, Uuid)>,
) -> BTreeMap<Uuid, Vec<&'static str>> {
    let timeout = fixture.timeout();
    let mut published = BTreeSet::new();
    let mut handled = BTreeMap::<Uuid, Vec<&'static str>>::new();
    let both_handled = |handled: &BTreeMap<Uuid, Vec<&'static str>>| {
        handled.values().flatten().collect::<BTreeSet<_>>().len() == 2
    };
    let started = Instant::now();
    let mut batch = 0_u64;
    while !both_handled(&handled) {
        assert!(
            started.elapsed() < timeout * 2,
            "after {:?} and {batch} batches, only {:?} handled messages: the group did not \
             split the partitions between its two members",
            started.elapsed(),
            handled.values().flatten().collect::<BTreeSet<_>>()
        );
        let messages: Vec<_> = (0..20)
            .map(|index| contract_message(topic, &format!("key-{batch}-{index}"), 0))
            .collect();
        published.extend(messages.iter().map(|message| message.message_id));
        publish(fixture, &messages).await;
        batch += 1;
        let pause = Instant::now() + Duration::from_millis(200);
        collect_until(&mut handled_rx, &mut handled, pause, both_handled).await;
    }

    let all_handled = |handled: &BTreeMap<Uuid, Vec<&'static str>>| {
        published.iter().all(|id| handled.contains_key(id))
    };
    let deadline = Instant::now() + timeout;
    collect_until(&mut handled_rx, &mut handled, deadline, all_handled).await;
    assert!(
        all_handled(&handled),
        "{} of {} published messages were not handled within {timeout:?}",
        published
            .iter()
            .filter(|id| !handled.contains_key(id))
            .count(),
        published.len()
    );
    collect_until(
        &mut handled_rx,
        &mut handled,
        Instant::now() + DUPLICATE_GRACE,
        |_| false,
    )
    .await;
    let strangers: Vec<&Uuid> = handled
        .keys()
        .filter(|id| !published.contains(*id))
        .collect();
    assert!(
        strangers.is_empty(),
        "handled messages that were never published: {strangers:?}"
    );
    handled
}

/// Records handled messages until `done` holds or `until` passes.
async fn collect_until(
    handled_rx: &mut mpsc::UnboundedReceiver<(&'static str, Uuid)>,
    handled: &mut BTreeMap<Uuid, Vec<&'static str>>,
    until: Instant,
    done: impl Fn(&BTreeMap<Uuid, Vec<&'static str>>) -> bool,
) {
    while !done(handled) {
        match tokio::time::timeout_at(until, handled_rx.recv()).await {
            Ok(Some((member, id))) => handled.entry(id).or_default().push(member),
            Ok(None) | Err(_) => return,
        }
    }
}

/// Receives and commits until told to stop, reporting each message whose commit succeeded.
async fn run_member<C: Consumer>(
    name: &'static str,
    consumer: &mut C,
    handled_tx: mpsc::UnboundedSender<(&'static str, Uuid)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            delivery = consumer.recv() => {
                let delivery = delivery
                    .unwrap_or_else(|error| panic!("member {name}: recv failed: {error}"));
                match consumer.commit(&delivery).await {
                    Ok(()) => {
                        let _ = handled_tx.send((name, delivery.message.message_id));
                    }
                    Err(error) => tracing::debug!(
                        "member {name}: commit of {} refused ({error}); its partition's new \
                         owner receives it again",
                        describe(&delivery)
                    ),
                }
            }
        }
    }
}
