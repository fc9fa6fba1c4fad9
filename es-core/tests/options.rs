//! Options from serde and from environment variables.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use es_core::relay::RelayOptions;
use es_core::runtime::RuntimeOptions;
use es_core::{SubscriptionOptions, options_from_vars};

#[test]
fn unset_fields_keep_their_defaults() {
    let none: [(&str, &str); 0] = [];
    let relay: RelayOptions = options_from_vars(RelayOptions::ENV_PREFIX, none).unwrap();
    assert_eq!(relay, RelayOptions::default());
}

#[test]
fn durations_take_milliseconds_units_or_serdes_own_form() {
    let relay: RelayOptions = options_from_vars(
        RelayOptions::ENV_PREFIX,
        [
            ("ES_RELAY_MIN_POLL_INTERVAL", "20"),
            ("ES_RELAY_MAX_POLL_INTERVAL", "3s"),
            ("ES_RELAY_MAX_RETRY_DELAY", "2m"),
            ("ES_RELAY_RETENTION_INTERVAL", "1h"),
        ],
    )
    .unwrap();
    assert_eq!(relay.min_poll_interval, Duration::from_millis(20));
    assert_eq!(relay.max_poll_interval, Duration::from_secs(3));
    assert_eq!(relay.max_retry_delay, Duration::from_secs(120));
    assert_eq!(relay.retention_interval, Some(Duration::from_secs(3600)));

    let json = serde_json::json!({ "restart_delay": { "secs": 1, "nanos": 500_000_000 }, "drain_timeout": 250 });
    let runtime: RuntimeOptions = serde_json::from_value(json).unwrap();
    assert_eq!(runtime.restart_delay, Duration::from_millis(1500));
    assert_eq!(runtime.drain_timeout, Duration::from_millis(250));
    assert_eq!(
        runtime.max_restart_delay,
        RuntimeOptions::default().max_restart_delay
    );
}

#[test]
fn unknown_names_and_bad_values_are_refused_with_the_prefix() {
    let unknown = options_from_vars::<SubscriptionOptions, _, _, _>(
        SubscriptionOptions::ENV_PREFIX,
        [("ES_SUBSCRIPTION_BATCHSIZE", "10")],
    )
    .unwrap_err();
    assert!(
        unknown.to_string().contains("ES_SUBSCRIPTION_"),
        "{unknown}"
    );
    assert!(unknown.to_string().contains("batchsize"), "{unknown}");
    let negative = options_from_vars::<RuntimeOptions, _, _, _>(
        RuntimeOptions::ENV_PREFIX,
        [("ES_RUNTIME_DRAIN_TIMEOUT", "-5")],
    )
    .unwrap_err();
    assert!(
        negative.to_string().contains("not a duration"),
        "{negative}"
    );
}
