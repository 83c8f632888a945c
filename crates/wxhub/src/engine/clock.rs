//! The engine's clock: the crate's [`crate::clock`], named here for the engine's users.

pub use crate::clock::{Clock, ManualClock, SystemClock};
