//! Identifiers. Each id is a newtype so that an account id can never be passed where an
//! order id is expected. All are fixed-width integers (no `usize`): they are journaled
//! and hashed.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $inner:ty) => {
        $(#[$m])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            Encode, Decode, Default,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// An account (main or sub-account). Up to 10 decimal digits are used by campaigns.
    AccountId,
    u64
);
id_type!(
    /// An order id, chosen by the gateway and unique among live orders.
    OrderId,
    u64
);
id_type!(
    /// Dense instrument index into the configuration's instrument table.
    InstrumentId,
    u32
);
id_type!(
    /// Dense asset index into the configuration's asset table.
    AssetId,
    u16
);
impl AssetId {
    /// The id of entry `k` of an asset table. Tables are indexed by `AssetId`, so they
    /// never have more than 2^16 entries (the configuration check refuses more).
    #[inline]
    pub fn at(k: usize) -> AssetId {
        AssetId(u16::try_from(k).expect("asset tables have at most 2^16 entries"))
    }
}

id_type!(
    /// Sequence number stamped by the sequencer; strictly increasing.
    SeqNo,
    u64
);
id_type!(
    /// Nanoseconds since the Unix epoch, as stamped by the sequencer (never read from a
    /// clock inside the engine).
    Nanos,
    u64
);
