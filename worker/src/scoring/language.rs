//! Language identification lives in `seedling-common` (the coordinator
//! needs it to pick demonstrations too); the worker's checks use it from here.

pub use seedling_common::language::*;
