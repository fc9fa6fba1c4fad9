//! Configuration from flags and the environment (every flag has an `ECOMMERCE_*` variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use es_core::privacy::{InvalidMasterKey, MasterKey, MasterKeys};

use crate::auth::Scope;
pub use crate::identity::{
    ClientCredentials, DEVELOPMENT_CLIENT_ID, DEVELOPMENT_CLIENT_SECRET, DEVELOPMENT_SECRET,
    IdentityConfig, development_client,
};

/// Flags of `ecommerce serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Public listener (the API under /api/v2, /health and /ready).
    #[arg(long, env = "ECOMMERCE_PUBLIC_ADDR", default_value = "0.0.0.0:5000")]
    pub public_addr: SocketAddr,
    /// Internal listener (/api/v2/internal/..., M2M tokens only). Keep it on loopback or a
    /// private network.
    #[arg(
        long,
        env = "ECOMMERCE_INTERNAL_ADDR",
        default_value = "127.0.0.1:5100"
    )]
    pub internal_addr: SocketAddr,
    /// Run one service of the split deployment (identity, customers, catalog, inventory,
    /// quotes, orders, payments or shipments) instead of every context in one process; give
    /// it its own listeners (`--public-addr`, `--internal-addr`) and a PostgreSQL role of its
    /// own in `DATABASE_URL`.
    #[arg(long, env = "ECOMMERCE_SERVICE", value_enum)]
    pub service: Option<crate::split::ServiceName>,
    /// With `--service`: the host of the other services, each at its default ports, unless
    /// `ECOMMERCE_PEER_<SERVICE>_URL` gives one's internal URL (and
    /// `ECOMMERCE_PEER_IDENTITY_PUBLIC_URL` identity's public one).
    #[arg(long, env = "ECOMMERCE_PEERS_HOST", default_value = "127.0.0.1")]
    pub peers_host: String,
    /// With `--service`: the machine client it calls the other services as.
    #[arg(long, env = "ECOMMERCE_SERVICE_CLIENT_ID", default_value = DEVELOPMENT_CLIENT_ID)]
    pub service_client_id: String,
    /// Its secret.
    #[arg(long, env = "ECOMMERCE_SERVICE_CLIENT_SECRET", default_value = DEVELOPMENT_CLIENT_SECRET, hide_default_value = true, hide_env_values = true)]
    pub service_client_secret: String,
    /// Proxies whose `X-Forwarded-For` names the client (comma-separated addresses): the
    /// gateway's, when the services run behind it.
    #[arg(long, env = "ECOMMERCE_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// PostgreSQL URL; without it everything is kept in memory and lost on exit.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Prefix of the per-context PostgreSQL schemas (`{prefix}_customers`, ...).
    #[arg(long, env = "ECOMMERCE_SCHEMA_PREFIX", default_value = "ecommerce")]
    pub schema_prefix: String,
    /// PostgreSQL pool size.
    #[arg(long, env = "ECOMMERCE_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,
    /// Production mode: refuse to start with the built-in development secrets or short
    /// ones (`true`, `1`, `yes`, `on` and their opposites).
    #[arg(
        long,
        env = "ECOMMERCE_PRODUCTION",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub production: bool,
    /// Token signing secret (at least 32 bytes).
    #[arg(long, env = "ECOMMERCE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// File holding the token signing secret (instead of `--jwt-secret`).
    #[arg(long, env = "ECOMMERCE_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Machine clients: `id:secret:scope scope,id2:secret2:scope` (scopes: read write delete keys).
    #[arg(long, env = "ECOMMERCE_M2M_CLIENTS", hide_env_values = true)]
    pub m2m_clients: Option<String>,
    /// Customer access-token lifetime in seconds.
    #[arg(long, env = "ECOMMERCE_ACCESS_TOKEN_SECONDS", default_value_t = 900)]
    pub access_token_seconds: u64,
    /// Refresh-token lifetime in seconds.
    #[arg(long, env = "ECOMMERCE_REFRESH_TOKEN_SECONDS", default_value_t = 14 * 24 * 3600)]
    pub refresh_token_seconds: u64,
    /// M2M access-token lifetime in seconds.
    #[arg(long, env = "ECOMMERCE_M2M_TOKEN_SECONDS", default_value_t = 3600)]
    pub m2m_token_seconds: u64,
    /// Password hashes computed at once (each holds 19 MiB); 0 means one per CPU.
    #[arg(long, env = "ECOMMERCE_PASSWORD_HASHING_SLOTS", default_value_t = 0)]
    pub password_hashing_slots: usize,
    /// Milliseconds a sign-in or registration waits for a hashing slot before a 503.
    #[arg(
        long,
        env = "ECOMMERCE_PASSWORD_HASHING_WAIT_MS",
        default_value_t = 2000
    )]
    pub password_hashing_wait_ms: u64,
    /// Sign-in attempts allowed per account per minute (then 429 with `Retry-After`).
    #[arg(
        long,
        env = "ECOMMERCE_SIGN_INS_PER_ACCOUNT_PER_MINUTE",
        default_value_t = 10
    )]
    pub sign_ins_per_account_per_minute: u32,
    /// Sign-in attempts allowed per client address per minute.
    #[arg(
        long,
        env = "ECOMMERCE_SIGN_INS_PER_ADDRESS_PER_MINUTE",
        default_value_t = 60
    )]
    pub sign_ins_per_address_per_minute: u32,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "ECOMMERCE_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// Connections each listener holds open at once; more wait in the backlog.
    #[arg(long, env = "ECOMMERCE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Milliseconds a client has to send a request's headers; also how long an idle
    /// kept-alive connection stays open.
    #[arg(
        long,
        env = "ECOMMERCE_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,
    /// The longest pause, in milliseconds, while a request body is read (then 408).
    #[arg(long, env = "ECOMMERCE_BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_read_timeout_ms: u64,
    /// Milliseconds shutdown waits for in-flight requests and open streams.
    #[arg(long, env = "ECOMMERCE_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// The master key that wraps the customers' personal-data keys at rest: 32 bytes in
    /// base64 (`openssl rand -base64 32`). Required in production.
    #[arg(long, env = "ECOMMERCE_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// The master key's version (stored with each key it wraps).
    #[arg(long, env = "ECOMMERCE_MASTER_KEY_VERSION", default_value_t = 1)]
    pub master_key_version: u32,
    /// Older master keys still unwrapping keys during a rotation: `version:base64,...`.
    #[arg(long, env = "ECOMMERCE_OLDER_MASTER_KEYS", hide_env_values = true)]
    pub older_master_keys: Option<String>,
    /// Seconds a workflow step may go unanswered before the order is cancelled.
    #[arg(long, env = "ECOMMERCE_STEP_TIMEOUT_SECONDS", default_value_t = 60.0)]
    pub step_timeout_seconds: f64,
    /// Decline payments of orders whose total ends in these cents (for demos and tests).
    #[arg(long, env = "ECOMMERCE_FAIL_PAYMENTS_ENDING_IN")]
    pub fail_payments_ending_in: Option<u32>,
    /// Fail shipments of orders whose total ends in these cents (for demos and tests).
    #[arg(long, env = "ECOMMERCE_FAIL_SHIPMENTS_ENDING_IN")]
    pub fail_shipments_ending_in: Option<u32>,
    /// Deliver every integration message twice (shows that handlers are idempotent).
    #[arg(long, env = "ECOMMERCE_DUPLICATE_DELIVERY")]
    pub duplicate_delivery: bool,
    /// Kafka bootstrap servers; without them messages travel on the in-process bus. Other
    /// librdkafka settings (SASL, TLS) come from `KAFKA_CONFIG_*` variables
    /// (`KAFKA_CONFIG_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub kafka_bootstrap_servers: Option<String>,
    /// Send every message through Kafka, even those whose handlers run in this process (by
    /// default those are handed over in memory, as durably: a relay's checkpoint waits for
    /// their handlers).
    #[arg(long, env = "ECOMMERCE_THROUGH_BROKER")]
    pub through_broker: bool,
    /// Members of each consumer group on the local route (one per partition there).
    #[arg(long, env = "ECOMMERCE_LOCAL_MEMBERS", default_value_t = crate::app::WorkflowConfig::DEFAULT_LOCAL_MEMBERS)]
    pub local_members: usize,
    /// Members of the workflow's Kafka consumer group in this process.
    #[arg(long, env = "ECOMMERCE_CONSUMERS", default_value_t = 4)]
    pub consumers: usize,
    /// Partitions of each topic the app creates (existing topics keep theirs). More partitions
    /// let more members share the work; each costs the test broker a check per fetch.
    #[arg(long, env = "ECOMMERCE_PARTITIONS", default_value_t = crate::app::WorkflowConfig::DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// A prefix before every Kafka topic name.
    #[arg(long, env = "ECOMMERCE_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Production mode with a built-in development secret, or none.
    #[error(
        "production mode refuses {0}; set ECOMMERCE_JWT_SECRET (or _FILE) and ECOMMERCE_M2M_CLIENTS"
    )]
    DevelopmentSecret(&'static str),
    /// A value does not parse.
    #[error("invalid {name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl ServeArgs {
    /// What each listener lets its clients hold.
    pub fn server(&self) -> crate::http::server::ServerLimits {
        crate::http::server::ServerLimits {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
        }
    }

    /// The master keys; the built-in development key when none is given (refused in
    /// production).
    ///
    /// # Errors
    /// [`ConfigError::DevelopmentSecret`] in production without a master key;
    /// [`ConfigError::Invalid`] for a key that is not 32 bytes of base64, or two keys of one
    /// version.
    pub fn master_keys(&self) -> Result<MasterKeys, ConfigError> {
        let invalid = |name: &'static str| {
            move |error: InvalidMasterKey| ConfigError::Invalid {
                name,
                reason: error.to_string(),
            }
        };
        let Some(master) = &self.master_key else {
            if self.production {
                return Err(ConfigError::DevelopmentSecret("the built-in master key"));
            }
            return Ok(crate::app::development_master_keys());
        };
        let current = MasterKey::from_base64(self.master_key_version, master)
            .map_err(invalid("ECOMMERCE_MASTER_KEY"))?;
        let mut older = Vec::new();
        for entry in self
            .older_master_keys
            .iter()
            .flat_map(|spec| spec.split(','))
        {
            let (version, key) = entry.trim().split_once(':').ok_or(ConfigError::Invalid {
                name: "ECOMMERCE_OLDER_MASTER_KEYS",
                reason: "each entry is `version:base64`".to_owned(),
            })?;
            let version = version.parse().map_err(|_| ConfigError::Invalid {
                name: "ECOMMERCE_OLDER_MASTER_KEYS",
                reason: format!("{version:?} is not a version number"),
            })?;
            older.push(
                MasterKey::from_base64(version, key)
                    .map_err(invalid("ECOMMERCE_OLDER_MASTER_KEYS"))?,
            );
        }
        MasterKeys::new(current, older).map_err(invalid("ECOMMERCE_OLDER_MASTER_KEYS"))
    }

    /// Kafka's settings, when bootstrap servers are given.
    pub fn kafka(&self) -> Option<crate::app::KafkaSettings> {
        let servers = self.kafka_bootstrap_servers.as_ref()?;
        let mut config = es_kafka::KafkaConfig::from_env()
            .unwrap_or_else(|_| es_kafka::KafkaConfig::new(servers.clone()));
        config.bootstrap_servers.clone_from(servers);
        Some(crate::app::KafkaSettings {
            config,
            topic_prefix: self.topic_prefix.clone(),
        })
    }

    /// The workflow's settings.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a negative or absurd timeout, or cents above 99.
    pub fn workflow(&self) -> Result<crate::app::WorkflowConfig, ConfigError> {
        let step_timeout = Duration::try_from_secs_f64(self.step_timeout_seconds)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| ConfigError::Invalid {
                name: "ECOMMERCE_STEP_TIMEOUT_SECONDS",
                reason: "must be a positive number of seconds".to_owned(),
            })?;
        for (name, cents) in [
            (
                "ECOMMERCE_FAIL_PAYMENTS_ENDING_IN",
                self.fail_payments_ending_in,
            ),
            (
                "ECOMMERCE_FAIL_SHIPMENTS_ENDING_IN",
                self.fail_shipments_ending_in,
            ),
        ] {
            if cents.is_some_and(|c| c > 99) {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "cents go from 0 to 99".to_owned(),
                });
            }
        }
        Ok(crate::app::WorkflowConfig {
            step_timeout,
            failures: crate::failures::FailureRules {
                payment_cents: self.fail_payments_ending_in,
                shipment_cents: self.fail_shipments_ending_in,
            },
            duplicate_delivery: self.duplicate_delivery,
            consumers: self.consumers.max(1),
            partitions: self.partitions.max(1),
            through_broker: self.through_broker,
            local_members: self.local_members.max(1),
            ..crate::app::WorkflowConfig::default()
        })
    }

    /// The proxies of `--trusted-proxies`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for an entry that is not an IP address.
    pub fn trusted_proxies(&self) -> Result<Vec<std::net::IpAddr>, ConfigError> {
        let Some(list) = &self.trusted_proxies else {
            return Ok(Vec::new());
        };
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry.parse().map_err(|_| ConfigError::Invalid {
                    name: "ECOMMERCE_TRUSTED_PROXIES",
                    reason: format!("{entry:?} is not an IP address"),
                })
            })
            .collect()
    }

    /// With `--service`, where the other services are.
    pub fn split(&self) -> Option<crate::split::SplitConfig> {
        let service = self.service?;
        let host = &self.peers_host;
        let peer = |name: crate::split::ServiceName, port: u16, public: bool| {
            let variable = if public {
                format!("ECOMMERCE_PEER_{}_PUBLIC_URL", name.as_str().to_uppercase())
            } else {
                format!("ECOMMERCE_PEER_{}_URL", name.as_str().to_uppercase())
            };
            std::env::var(variable).unwrap_or_else(|_| format!("http://{host}:{port}"))
        };
        let identity = crate::split::ServiceName::Identity;
        Some(crate::split::SplitConfig {
            service,
            internal: crate::split::ServiceName::ALL
                .iter()
                .map(|s| (*s, peer(*s, s.ports().1, false)))
                .collect(),
            identity_url: peer(identity, identity.ports().0, true),
            client_id: self.service_client_id.clone(),
            client_secret: self.service_client_secret.clone(),
            calls: crate::remote::CallPolicy::default(),
        })
    }

    /// Identity's settings, checked for production.
    ///
    /// # Errors
    /// [`ConfigError::DevelopmentSecret`] in production mode with a built-in or missing secret;
    /// [`ConfigError::Invalid`] for an unreadable secret file or malformed clients.
    pub fn identity(&self) -> Result<IdentityConfig, ConfigError> {
        let secret = match (&self.jwt_secret, &self.jwt_secret_file) {
            (Some(secret), _) => Some(secret.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Invalid {
                        name: "ECOMMERCE_JWT_SECRET_FILE",
                        reason: format!("{}: {e}", path.display()),
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let clients = match &self.m2m_clients {
            Some(spec) => parse_clients(spec)?,
            None => vec![development_client()],
        };
        let signing_secret = secret.unwrap_or_else(|| DEVELOPMENT_SECRET.to_owned());
        if self.production {
            if signing_secret == DEVELOPMENT_SECRET {
                return Err(ConfigError::DevelopmentSecret(
                    "the development signing secret",
                ));
            }
            if signing_secret.len() < 32 {
                return Err(ConfigError::Invalid {
                    name: "ECOMMERCE_JWT_SECRET",
                    reason: "use at least 32 bytes in production".to_owned(),
                });
            }
            if let Some(short) = clients.iter().find(|c| c.secret.len() < 32) {
                return Err(ConfigError::Invalid {
                    name: "ECOMMERCE_M2M_CLIENTS",
                    reason: format!(
                        "the secret of client {} is shorter than 32 bytes; use at least 32 in production",
                        short.id
                    ),
                });
            }
            if clients
                .iter()
                .any(|c| c.secret == DEVELOPMENT_CLIENT_SECRET)
            {
                return Err(ConfigError::DevelopmentSecret(
                    "the development client secret",
                ));
            }
        }
        Ok(IdentityConfig {
            signing_secret,
            access_token_ttl: Duration::from_secs(self.access_token_seconds),
            refresh_token_ttl: Duration::from_secs(self.refresh_token_seconds),
            m2m_token_ttl: Duration::from_secs(self.m2m_token_seconds),
            clients,
            sign_in: crate::identity::SignInLimits {
                hashing: match self.password_hashing_slots {
                    0 => crate::identity::SignInLimits::default().hashing,
                    slots => slots,
                },
                hashing_wait: Duration::from_millis(self.password_hashing_wait_ms),
                per_account_per_minute: self.sign_ins_per_account_per_minute,
                per_address_per_minute: self.sign_ins_per_address_per_minute,
            },
            refresh_reuse_grace: Duration::from_secs(2),
        })
    }
}

/// Parses `id:secret:scope scope,id2:secret2:scope`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the malformed entry.
pub fn parse_clients(spec: &str) -> Result<Vec<ClientCredentials>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "ECOMMERCE_M2M_CLIENTS",
        reason,
    };
    spec.split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| {
            let mut parts = entry.trim().splitn(3, ':');
            let (Some(id), Some(secret), Some(scopes)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(invalid("each client is `id:secret:scopes`".to_owned()));
            };
            if id.is_empty() || secret.is_empty() {
                return Err(invalid("a client needs an id and a secret".to_owned()));
            }
            let scopes = scopes
                .split_whitespace()
                .map(|s| Scope::parse(s).ok_or_else(|| invalid(format!("unknown scope `{s}`"))))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ClientCredentials {
                id: id.to_owned(),
                secret: secret.to_owned(),
                scopes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["ecommerce"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).serve
    }

    #[test]
    fn production_takes_the_usual_boolean_spellings() {
        for yes in [
            "--production",
            "--production=true",
            "--production=1",
            "--production=yes",
            "--production=on",
        ] {
            assert!(args(&[yes]).production, "{yes}");
        }
        for no in [
            "--production=false",
            "--production=0",
            "--production=no",
            "--production=off",
        ] {
            assert!(!args(&[no]).production, "{no}");
        }
        assert!(!args(&[]).production);
    }

    #[test]
    fn master_keys_come_from_configuration_and_production_requires_one() {
        assert!(args(&[]).master_keys().is_ok());
        assert!(matches!(
            args(&["--production"]).master_keys(),
            Err(ConfigError::DevelopmentSecret(_))
        ));
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
        let keys = args(&[
            "--production",
            "--master-key",
            key,
            "--master-key-version",
            "3",
            "--older-master-keys",
            &format!("2:{key}"),
        ])
        .master_keys()
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys.current().version(), 3);
        assert!(keys.get(2).is_some());
        for bad in [
            vec!["--master-key", "c2hvcnQ="],
            vec!["--master-key", key, "--older-master-keys", "two:abc"],
            vec![
                "--master-key",
                key,
                "--older-master-keys",
                &format!("1:{key}"),
            ],
        ] {
            assert!(
                matches!(args(&bad).master_keys(), Err(ConfigError::Invalid { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn production_refuses_development_secrets() {
        assert!(matches!(
            args(&["--production"]).identity(),
            Err(ConfigError::DevelopmentSecret(_))
        ));
        let secret = "s".repeat(40);
        assert!(matches!(
            args(&["--production", "--jwt-secret", &secret]).identity(),
            Err(ConfigError::DevelopmentSecret(_))
        ));
        let ok = args(&[
            "--production",
            "--jwt-secret",
            &secret,
            "--m2m-clients",
            &format!("orders:{secret}:read write"),
        ])
        .identity();
        assert!(ok.is_ok(), "{ok:?}");
        let short_client = args(&[
            "--production",
            "--jwt-secret",
            &secret,
            "--m2m-clients",
            "orders:x1y2z3:read write",
        ])
        .identity();
        assert!(
            matches!(
                short_client,
                Err(ConfigError::Invalid {
                    name: "ECOMMERCE_M2M_CLIENTS",
                    ..
                })
            ),
            "{short_client:?}"
        );
        assert!(
            args(&[
                "--production",
                "--jwt-secret",
                "short",
                "--m2m-clients",
                "a:b:read"
            ])
            .identity()
            .is_err()
        );
    }

    #[test]
    fn development_uses_the_built_in_client() -> Result<(), ConfigError> {
        let identity = args(&[]).identity()?;
        assert_eq!(identity.signing_secret, DEVELOPMENT_SECRET);
        assert_eq!(identity.clients[0].id, DEVELOPMENT_CLIENT_ID);
        Ok(())
    }

    #[test]
    fn clients_parse() -> Result<(), ConfigError> {
        let clients = parse_clients("a:s1:read write, b:s2:read")?;
        assert_eq!(clients.len(), 2);
        assert_eq!(clients[0].scopes, vec![Scope::Read, Scope::Write]);
        assert!(parse_clients("a:s1").is_err());
        assert!(parse_clients("a:s1:fly").is_err());
        Ok(())
    }
}
