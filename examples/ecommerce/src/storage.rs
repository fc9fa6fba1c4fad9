//! Why a context's storage failed, with the cause kept: the store, an id that makes no
//! stream, an event that does not decode or encode, a table or a read model.

use es_core::{
    BoxError, CodecError, DecodeError, InvalidStreamId, RepositoryError, Rerun, StoreError,
    UnitError,
};

/// A storage failure of a context (never a refusal: those are each context's own errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The event store failed, or a stream kept moving.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An id that makes no stream name.
    #[error(transparent)]
    Id(#[from] InvalidStreamId),
    /// A stored event does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A new event or message does not encode.
    #[error(transparent)]
    Encode(#[from] CodecError),
    /// A table or a read model failed.
    #[error(transparent)]
    Other(BoxError),
}

impl StorageError {
    /// Whether a stream kept moving under the operation (answered 409: try again).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Store(StoreError::Conflict(_)))
    }

    /// A failure of a table or a read model.
    pub fn other(error: impl Into<BoxError>) -> Self {
        Self::Other(error.into())
    }
}

impl UnitError for StorageError {
    fn rerun(&self) -> Option<Rerun<'_>> {
        match self {
            Self::Store(error) => error.rerun(),
            _ => None,
        }
    }
}

/// A repository's failure as the aggregate's refusal (`Ok`) or a storage failure (`Err`).
pub fn refusal<E: std::error::Error + Send + Sync + 'static>(
    error: RepositoryError<E>,
) -> Result<E, StorageError> {
    match error {
        RepositoryError::Rejected(rejected) => Ok(rejected),
        RepositoryError::Conflict(conflict) => Err(StoreError::Conflict(conflict).into()),
        RepositoryError::Store(store) => Err(store.into()),
        RepositoryError::Decode(decode) => Err(decode.into()),
        RepositoryError::Encode(encode) => Err(encode.into()),
        other => Err(StorageError::other(other)),
    }
}

/// A repository's failure where the aggregate refuses nothing (or a refusal is a failure).
pub fn storage<E: std::error::Error + Send + Sync + 'static>(
    error: RepositoryError<E>,
) -> StorageError {
    match refusal(error) {
        Ok(rejected) => StorageError::other(rejected),
        Err(storage) => storage,
    }
}
