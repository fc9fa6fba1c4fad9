//! Reaching the database named by the environment.

use tokio_postgres::{Client, NoTls};

/// The environment variable that names the PostgreSQL database.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

const HOW_TO_START: &str = "start PostgreSQL with `pg_ctlcluster --skip-systemctl-redirect \
    $(ls /etc/postgresql) main start`, or run the whole suite through `scripts/test`, which \
    starts it and exports DATABASE_URL";

/// Failure to reach PostgreSQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// `DATABASE_URL` is not set.
    #[error("DATABASE_URL is not set: {HOW_TO_START}")]
    MissingUrl,
    /// The server did not accept a connection.
    #[error("cannot connect to PostgreSQL at {url}: {source}; {HOW_TO_START}")]
    Unreachable {
        /// The URL that was tried, without its password.
        url: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// The database URL from `DATABASE_URL`.
///
/// # Errors
/// [`ConnectError::MissingUrl`] when the variable is unset or empty.
pub fn database_url() -> Result<String, ConnectError> {
    match std::env::var(DATABASE_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        _ => Err(ConnectError::MissingUrl),
    }
}

/// Opens one connection to `url` without TLS and drives it on the current tokio runtime.
///
/// # Errors
/// [`ConnectError::Unreachable`] when the server refuses or cannot be reached.
pub async fn connect(url: &str) -> Result<Client, ConnectError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|source| ConnectError::Unreachable {
            url: redact(url),
            source,
        })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "PostgreSQL connection closed with an error");
        }
    });
    Ok(client)
}

/// Removes a password from a URL of the form `scheme://user:password@host/...`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://app:secret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact("host=db"), "host=db");
    }
}
