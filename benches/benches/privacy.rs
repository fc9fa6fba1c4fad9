//! Crypto-shredding's cost: commands appending an event with two personal fields, and loads
//! of a 100-event stream of them, through a repository with privacy (keys in PostgreSQL,
//! `PgKeyStore`) against the same repository and events with the two fields in clear, in the
//! same run, alternating.
//!
//! `cargo bench --bench privacy` (needs `DATABASE_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use es_benches::{Report, alternate, fresh_store};
use es_core::privacy::{MasterKey, MasterKeys, Personal, Privacy, SubjectId};
use es_core::{Aggregate, CommandContext, DomainEvent, Repository, StreamId};
use es_postgres::PgEventStore;
use serde::{Deserialize, Serialize};

const SCHEMA: &str = "es_bench_privacy";
const STREAM: usize = 100;

/// One aggregate, generic over how its two personal fields are held.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Contact<F> {
    notes: u32,
    last: Option<(F, F)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum ContactEvent<F> {
    #[serde(rename = "ContactNoted")]
    Noted { name: F, email: F, n: u32 },
}

impl<F> DomainEvent for ContactEvent<F>
where
    F: Serialize + for<'de> Deserialize<'de> + Clone + Send + Sync + std::fmt::Debug + 'static,
{
    const EVENT_TYPES: &'static [es_core::EventType] = &[es_core::EventType::new("ContactNoted")];
    fn event_type(&self) -> &'static str {
        "ContactNoted"
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

trait Field:
    Serialize + for<'de> Deserialize<'de> + Clone + Send + Sync + std::fmt::Debug + Default + 'static
{
    fn of(subject: &SubjectId, value: String) -> Self;
}

impl Field for String {
    fn of(_: &SubjectId, value: String) -> Self {
        value
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
struct Private(Personal<String>);

impl Default for Private {
    fn default() -> Self {
        Self(Personal::forgotten(SubjectId::new("none").unwrap()))
    }
}

impl Field for Private {
    fn of(subject: &SubjectId, value: String) -> Self {
        Self(Personal::new(subject.clone(), value))
    }
}

impl<F: Field> Aggregate for Contact<F> {
    const TYPE: &'static str = "contact";
    type Command = (SubjectId, u32);
    type Event = ContactEvent<F>;
    type Error = Never;

    fn decide(&self, (subject, n): &(SubjectId, u32)) -> Result<Vec<ContactEvent<F>>, Never> {
        Ok(vec![ContactEvent::Noted {
            name: F::of(subject, format!("Ada Lovelace {n}")),
            email: F::of(subject, format!("ada.{n}@example.com")),
            n: *n,
        }])
    }

    fn evolve(&mut self, ContactEvent::Noted { name, email, .. }: &ContactEvent<F>) {
        self.notes += 1;
        self.last = Some((name.clone(), email.clone()));
    }
}

fn subject() -> SubjectId {
    SubjectId::new("contact-subject").unwrap()
}

async fn fill<F: Field>(repository: &Repository<Contact<F>, PgEventStore>, stream: &StreamId) {
    for n in 0..STREAM {
        repository
            .execute(stream, &(subject(), n as u32), &CommandContext::new())
            .await
            .unwrap();
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(fresh_store(SCHEMA, 4, true));
    let masters = MasterKeys::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap();
    let privacy = Privacy::new(Arc::new(store.keys(masters)));
    let private: Repository<Contact<Private>, _> =
        Repository::new(store.clone()).with_privacy(privacy);
    let plain: Repository<Contact<String>, _> = Repository::new(store.clone());
    let (private_stream, plain_stream) = (
        StreamId::new("contact-private").unwrap(),
        StreamId::new("contact-plain").unwrap(),
    );
    runtime.block_on(async {
        fill(&private, &private_stream).await;
        fill(&plain, &plain_stream).await;
    });
    let report = Report::default();
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    let next = AtomicU64::new(0);
    let mut group = criterion.benchmark_group("privacy/append");
    group.throughput(Throughput::Elements(1));
    let append = |encrypted: bool, iters: u64| {
        let start = Instant::now();
        runtime.block_on(async {
            for _ in 0..iters {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let stream = StreamId::new(format!("contact-{n}")).unwrap();
                let command = (subject(), 1);
                if encrypted {
                    private
                        .execute(&stream, &command, &CommandContext::new())
                        .await
                        .unwrap();
                } else {
                    plain
                        .execute(&stream, &command, &CommandContext::new())
                        .await
                        .unwrap();
                }
            }
        });
        start.elapsed()
    };
    alternate(
        &mut group,
        &report,
        "a command appending an event with two personal fields",
        1,
        |iters| append(true, iters),
        |iters| append(false, iters),
    );
    group.finish();

    let mut group = criterion.benchmark_group("privacy/load-100");
    group.throughput(Throughput::Elements(STREAM as u64));
    let load = |encrypted: bool, iters: u64| {
        let start = Instant::now();
        runtime.block_on(async {
            for _ in 0..iters {
                let notes = if encrypted {
                    private.load(&private_stream).await.unwrap().state.notes
                } else {
                    plain.load(&plain_stream).await.unwrap().state.notes
                };
                assert_eq!(notes as usize, STREAM);
            }
        });
        start.elapsed()
    };
    alternate(
        &mut group,
        &report,
        "load a 100-event stream, two personal fields per event",
        STREAM as u64,
        |iters| load(true, iters),
        |iters| load(false, iters),
    );
    group.finish();
    criterion.final_summary();
    println!("\n{}", report.table("events"));
}
