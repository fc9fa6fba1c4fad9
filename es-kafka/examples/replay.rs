//! Replays dead letters back to the topics they were read from.
//!
//! ```sh
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run -p es-kafka --example replay -- \
//!     shop.order.dlq [--type OrderPlaced] [--id <message id>]... [--topic shop.order]
//! ```

use es_kafka::{KafkaConfig, ReplayFilter, replay_dead_letters};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: replay <dlq topic> [--type T] [--id UUID]... [--topic T]";
    let dlq = args.next().ok_or(usage)?;
    let mut filter = ReplayFilter::all();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(usage)?;
        filter = match flag.as_str() {
            "--type" => filter.message_type(value),
            "--id" => filter.message_id(value.parse()?),
            "--topic" => filter.original_topic(value),
            _ => return Err(usage.into()),
        };
    }
    let report = replay_dead_letters(&KafkaConfig::from_env()?, &dlq, &filter).await?;
    println!(
        "{} replayed, {} left alone",
        report.replayed, report.skipped
    );
    Ok(())
}
