//! Stable wire tags: the journaled (bincode) encoding of the enums that reach the journal
//! or the state hash is written by hand from explicit numbers, never from the
//! declaration order of Rust variants, so that inserting or reordering variants never
//! changes what an existing journal means.
//!
//! - `Command` and `Event` ([`stable_tags!`]): a `u16` tag, then the variant's fields in
//!   the order listed in the tag table (not the order they are declared in). Tag 0 is
//!   never used. A tag that is no longer written goes into the type's `RETIRED_TAGS` and
//!   is never given to another variant; decoding it is an error naming it retired. The
//!   tables are listed in `docs/JOURNAL_FORMAT.md`.
//! - Field-less enums nested in commands, events and the engine state ([`stable_codes!`]):
//!   a `u32` code, the values bincode's derive gave them by declaration order when the
//!   codes were fixed (so neither journals nor state hashes changed), now written out.
//!
//! Adding a variant without a tag, or a field without listing it, does not compile (the
//! generated `match`es and struct expressions are exhaustive); a duplicated, zero or
//! retired tag fails a `const` check at compile time. Changing the fields of an existing
//! tag changes what journals mean: give the new shape a new tag and retire the old one,
//! or bump the journal's payload version (`perpcore_journal::PAYLOAD_VERSION`).
//!
//! Must never: panic on any input (an unknown tag is a `DecodeError`), allocate while
//! encoding, or reuse a retired tag.

/// True when every tag is non-zero, unique and not retired. Evaluated in a `const` for
/// each tagged type, so a violation fails the build.
pub const fn tags_valid(tags: &[(u16, &str)], retired: &[u16]) -> bool {
    let mut i = 0;
    while i < tags.len() {
        let t = tags[i].0;
        if t == 0 {
            return false;
        }
        let mut j = i + 1;
        while j < tags.len() {
            if tags[j].0 == t {
                return false;
            }
            j += 1;
        }
        let mut k = 0;
        while k < retired.len() {
            if retired[k] == t {
                return false;
            }
            k += 1;
        }
        i += 1;
    }
    true
}

/// Hand-written bincode `Encode`/`Decode` for an enum whose variants all have fields:
/// `Type, retired: [..], { Variant = tag { field, .. }, Variant = tag (field), }`.
/// Generates `Type::TAGS` (tag, variant name), `Type::RETIRED_TAGS` and `Type::tag()`.
macro_rules! stable_tags {
    (
        $ty:ident, retired: [$($retired:literal),* $(,)?],
        { $($var:ident = $tag:literal $fields:tt,)* }
    ) => {
        impl $ty {
            /// Every variant's stable wire tag and name, in the order listed.
            pub const TAGS: &'static [(u16, &'static str)] = &[$(($tag, stringify!($var)),)*];
            /// Tags no longer written; never given to another variant.
            pub const RETIRED_TAGS: &'static [u16] = &[$($retired),*];
            const ALLOWED_TAGS: &'static [u32] = &[$($tag),*];

            /// This variant's stable wire tag.
            pub fn tag(&self) -> u16 {
                match self {
                    $($crate::tags::stable_tags!(@pat $ty $var $fields) => $tag,)*
                }
            }
        }

        const _: () = assert!(
            $crate::tags::tags_valid($ty::TAGS, $ty::RETIRED_TAGS),
            concat!(stringify!($ty), ": a wire tag is zero, duplicated or retired")
        );

        impl bincode::Encode for $ty {
            fn encode<E: bincode::enc::Encoder>(
                &self,
                e: &mut E,
            ) -> Result<(), bincode::error::EncodeError> {
                match self {
                    $($ty::$var $fields => {
                        let tag: u16 = $tag;
                        bincode::Encode::encode(&tag, e)?;
                        $crate::tags::stable_tags!(@enc e $fields);
                    })*
                }
                Ok(())
            }
        }

        impl<C> bincode::Decode<C> for $ty {
            fn decode<D: bincode::de::Decoder<Context = C>>(
                d: &mut D,
            ) -> Result<Self, bincode::error::DecodeError> {
                let tag: u16 = bincode::Decode::decode(d)?;
                match tag {
                    $($tag => {
                        $crate::tags::stable_tags!(@dec d $fields);
                        Ok($ty::$var $fields)
                    })*
                    t if Self::RETIRED_TAGS.contains(&t) => Err(bincode::error::DecodeError::Other(
                        concat!("retired ", stringify!($ty), " tag"),
                    )),
                    found => Err(bincode::error::DecodeError::UnexpectedVariant {
                        type_name: stringify!($ty),
                        allowed: &bincode::error::AllowedEnumVariants::Allowed(Self::ALLOWED_TAGS),
                        found: u32::from(found),
                    }),
                }
            }
        }
        bincode::impl_borrow_decode!($ty);
    };
    (@pat $ty:ident $var:ident { $($f:ident),* $(,)? }) => { $ty::$var { .. } };
    (@pat $ty:ident $var:ident ( $($f:ident),* $(,)? )) => { $ty::$var(..) };
    (@enc $e:ident { $($f:ident),* $(,)? }) => { $(bincode::Encode::encode($f, $e)?;)* };
    (@enc $e:ident ( $($f:ident),* $(,)? )) => { $(bincode::Encode::encode($f, $e)?;)* };
    (@dec $d:ident { $($f:ident),* $(,)? }) => { $(let $f = bincode::Decode::decode($d)?;)* };
    (@dec $d:ident ( $($f:ident),* $(,)? )) => { $(let $f = bincode::Decode::decode($d)?;)* };
}
pub(crate) use stable_tags;

/// Hand-written bincode `Encode`/`Decode` for a field-less enum: a `u32` code per
/// variant, `Type { Variant = code, .. }`. Generates `Type::CODES`.
macro_rules! stable_codes {
    ($ty:ident { $($var:ident = $code:literal,)* }) => {
        impl $ty {
            /// Every variant with its stable wire code.
            pub const CODES: &'static [($ty, u32)] = &[$(($ty::$var, $code),)*];
            const ALLOWED_CODES: &'static [u32] = &[$($code),*];

            /// This variant's stable wire code.
            pub fn code(self) -> u32 {
                match self {
                    $($ty::$var => $code,)*
                }
            }
        }

        impl bincode::Encode for $ty {
            fn encode<E: bincode::enc::Encoder>(
                &self,
                e: &mut E,
            ) -> Result<(), bincode::error::EncodeError> {
                bincode::Encode::encode(&self.code(), e)
            }
        }

        impl<C> bincode::Decode<C> for $ty {
            fn decode<D: bincode::de::Decoder<Context = C>>(
                d: &mut D,
            ) -> Result<Self, bincode::error::DecodeError> {
                let code: u32 = bincode::Decode::decode(d)?;
                match code {
                    $($code => Ok($ty::$var),)*
                    found => Err(bincode::error::DecodeError::UnexpectedVariant {
                        type_name: stringify!($ty),
                        allowed: &bincode::error::AllowedEnumVariants::Allowed(Self::ALLOWED_CODES),
                        found,
                    }),
                }
            }
        }
        bincode::impl_borrow_decode!($ty);
    };
}
pub(crate) use stable_codes;
