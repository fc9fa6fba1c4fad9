//! Event sourcing vocabulary and ports.
