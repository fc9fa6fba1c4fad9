#![doc = include_str!("../README.md")]

mod codec;
mod compensation;
mod decision;
mod dispatch;
mod error;
mod handler;
mod input;
mod runner;
mod saga;
mod scheduler;
mod view;

pub use codec::{CodecError, decode, encode};
pub use compensation::{CompensatingCommand, CompletedStep, CompletedSteps};
pub use decision::{DeadlineRequest, Decision};
pub use dispatch::{CommandDispatcher, DISPATCH_TOPIC, DispatchError, DispatchLoop};
pub use error::SagaError;
pub use es_core::MessageType;
pub use handler::DeadlineTarget;
pub use input::{DEADLINE_FIRED, FiredDeadline, Input};
pub use runner::{Handled, SagaRunner};
pub use saga::{Route, Saga};
pub use scheduler::{DeadlineScheduler, SchedulerError, Tick};
pub use view::SagaView;
