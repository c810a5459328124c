//! Typed identifiers. A plan id is never a record id: the compiler says so.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix that marks this kind of id in text (`p-`, `r-`, ...).
            pub const PREFIX: &'static str = $prefix;

            /// Wraps an id read from storage or the wire.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

typed_id!(
    /// A submitted generation plan.
    PlanId, "p-"
);
typed_id!(
    /// A dataset record (an instruction/response pair, one version of it).
    RecordId, "r-"
);
typed_id!(
    /// Any node of the lineage DAG.
    NodeId, "n-"
);
typed_id!(
    /// A worker process in the cluster.
    WorkerId, "w-"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialise_as_plain_strings() {
        let id = RecordId::new("r-42");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"r-42\"");
        let back: RecordId = serde_json::from_str("\"r-42\"").unwrap();
        assert_eq!(back, id);
        assert_eq!(back.to_string(), "r-42");
    }
}
