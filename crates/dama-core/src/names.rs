//! The fixed names of the crate's choices (modes, presets, filters, estimators), one spelling
//! each, shared by the JSON files (serde), the command line and the explain example. An enum
//! gets them from [`named!`](crate::named): its list of variants, `Display` and `FromStr`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// An enum whose every variant has one fixed name.
pub trait Named: Sized + Copy + 'static {
    /// What the choice is called in messages ("mode", "preset").
    const KIND: &'static str;
    /// Every variant, in the order they are documented.
    const ALL: &'static [Self];

    fn name(self) -> &'static str;

    /// The variant called `s`; `-` and `_` are the same character (`raw-ratio` is
    /// `raw_ratio`), as command lines spell words with one and JSON with the other.
    fn from_name(s: &str) -> Result<Self, UnknownName> {
        let same = |name: &str| {
            name.len() == s.len()
                && name
                    .bytes()
                    .zip(s.bytes())
                    .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
        };
        Self::ALL
            .iter()
            .copied()
            .find(|v| same(v.name()))
            .ok_or_else(|| UnknownName {
                kind: Self::KIND,
                given: s.into(),
                choices: Self::ALL.iter().map(|v| v.name()).collect(),
            })
    }
}

/// A name that is none of a choice's variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    pub kind: &'static str,
    pub given: String,
    pub choices: Vec<&'static str>,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} `{}` (one of: {})",
            self.kind,
            self.given,
            self.choices.join(", ")
        )
    }
}

impl core::error::Error for UnknownName {}

/// Implements [`Named`], `Display` and `FromStr` for an enum of unit variants:
/// `named!(Mode, "mode", { Dpo => "dpo", Dama => "dama" });`
#[macro_export]
macro_rules! named {
    ($ty:ty, $kind:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $crate::Named for $ty {
            const KIND: &'static str = $kind;
            const ALL: &'static [Self] = &[$(<$ty>::$variant),+];

            fn name(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $name),+
                }
            }
        }

        impl ::core::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str($crate::Named::name(*self))
            }
        }

        impl ::core::str::FromStr for $ty {
            type Err = $crate::UnknownName;

            fn from_str(s: &str) -> ::core::result::Result<Self, Self::Err> {
                <$ty as $crate::Named>::from_name(s)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::{Estimator, Filter, Mode, Named, Preset};

    /// The names are the serde names: a file and a command line say the same thing.
    fn names_match_serde<
        T: Named
            + serde::Serialize
            + core::str::FromStr
            + PartialEq
            + core::fmt::Debug
            + core::fmt::Display,
    >()
    where
        T::Err: core::fmt::Debug,
    {
        for &v in T::ALL {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.name()));
            assert_eq!(v.name().parse::<T>().unwrap(), v);
            assert_eq!(v.to_string(), v.name());
        }
    }

    #[test]
    fn every_choice_has_one_name() {
        names_match_serde::<Mode>();
        names_match_serde::<Preset>();
        names_match_serde::<Filter>();
        names_match_serde::<Estimator>();
        assert_eq!(
            "raw-ratio".parse::<Estimator>().unwrap(),
            Estimator::RawRatio
        );
        let err = "dpp".parse::<Mode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown mode `dpp` (one of: dpo, d2po, mdpo, dama)"
        );
        assert!("raw ratio".parse::<Estimator>().is_err());
    }
}
